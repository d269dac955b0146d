"""Transitional: calibration helpers live in edgekd.backends.calib and edgekd.data.arrays."""
from ..backends.calib import check_calibration, count_samples, onnx_input_info, split_to_batch  # noqa: F401
from ..data.arrays import calibration_from_dataset, dataset_arrays  # noqa: F401
