"""Datasets for distillation: specs (digits, shapes, folder:, npz:, py:), tensor transforms, loaders."""
from __future__ import annotations

from .arrays import calibration_from_dataset, dataset_arrays
from .base import UNLABELLED, ArrayDataset, DataBundle, SampleDataset
from .shapes import shapes_normalization
from .sources import SPEC_FORMS, digits_normalization, load_data
from .transforms import (AugmentedDataset, Compose, Normalize, RandomHFlip, RandomPadCrop,
                         calibration_batches, default_augment, make_loader)

__all__ = ["UNLABELLED", "ArrayDataset", "AugmentedDataset", "Compose", "DataBundle",
           "Normalize", "RandomHFlip", "RandomPadCrop", "SPEC_FORMS", "SampleDataset",
           "calibration_batches", "calibration_from_dataset", "dataset_arrays", "default_augment", "digits_normalization", "load_data",
           "make_loader", "shapes_normalization"]
