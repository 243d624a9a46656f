"""distilshot: distilled few-shot image classifiers, from training to a torch-free runtime."""

__version__ = "0.1.0"
