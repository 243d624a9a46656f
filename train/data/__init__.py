"""The dataset layer: benchmark and folder datasets decoded to uint8 arrays, cached after the first load."""

from distilshot.train.data.decode import decode_image
from distilshot.train.data.imageset import DatasetInfo, ImageSet
from distilshot.train.data.registry import DATASETS, dataset_info, load_split

__all__ = ["DATASETS", "DatasetInfo", "ImageSet", "dataset_info", "decode_image", "load_split"]
