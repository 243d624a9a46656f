"""The torch-free core that train/, export/ and serve/ all import: the bundle manifest schema, the
prototype head's maths, the image preprocessing rule, hashing and atomic writes, and the typed names
(metric, sampling, schedule, ...) that configurations and manifests use."""
