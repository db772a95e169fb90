"""COCO / LVIS data layer: dataset with load-time validation, robust image reading, transforms,
padding collate, deterministic resumable samplers and loaders. The long-tailed benchmark
generator lives in :mod:`focaldet.data.benchmark`."""
from focaldet.data.coco import CocoDetection, SampleKey
from focaldet.data.collate import Batch, collate, padded_size
from focaldet.data.images import DEFAULT_MAX_PIXELS, read_image, read_image_array
from focaldet.data.loader import DetectionLoader, build_dataset, build_train_loader, build_val_loader
from focaldet.data.sampler import InferenceSampler, SeededBatchSampler, TrainSampler
from focaldet.data.transforms import Compose, RandomHorizontalFlip, ResizeShortSide, build_transforms
from focaldet.data.validation import CocoAnnotations, DataReport, load_coco_annotations

__all__ = [
    "CocoDetection", "SampleKey", "Batch", "collate", "padded_size", "read_image", "read_image_array",
    "DEFAULT_MAX_PIXELS", "DetectionLoader", "build_dataset", "build_train_loader", "build_val_loader", "TrainSampler",
    "InferenceSampler", "SeededBatchSampler", "Compose", "RandomHorizontalFlip", "ResizeShortSide",
    "build_transforms", "CocoAnnotations", "DataReport", "load_coco_annotations",
]
