"""The one exception family every stage raises for bad input; the CLI prints these without a traceback."""


class DistilshotError(Exception):
    """A problem the user can fix: the message says what is wrong and, where possible, what to do."""


class DatasetMissingError(DistilshotError):
    """Dataset files are absent and could not be downloaded."""


class ImageError(DistilshotError):
    """An image that cannot be used: unreadable, too large, too small, or of an unsupported kind."""


class BundleError(DistilshotError):
    """A bundle folder that is incomplete, altered or of an unknown schema."""


class CheckpointError(DistilshotError):
    """A checkpoint file that is not one of ours or cannot be read safely."""


class StoreError(DistilshotError):
    """A support-set store operation that was refused; the store is unchanged."""


class ConfigError(DistilshotError):
    """An unknown method, dataset, backbone, preset or option value."""
