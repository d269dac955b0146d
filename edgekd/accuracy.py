"""Top-1 accuracy, the one way: count the rows whose arg-max logit is the label.

Rows labelled below 0 (unlabelled samples, as the data loaders mark them) are left out of both
the count of correct rows and the count of rows. Works on numpy arrays and on torch tensors
alike, without importing torch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import BadInputError


def count_correct(logits: Any, labels: Any) -> tuple[int, int]:
    """(correct, labelled) for one batch of ``logits`` [N, C, ...] against ``labels`` [N]."""
    n = int(labels.shape[0]) if hasattr(labels, "shape") else len(labels)
    if hasattr(logits, "detach"):  # a torch tensor: stay on its device
        pred = logits.detach().reshape(n, -1).argmax(1)
        keep = labels.reshape(-1) >= 0
        return int((pred[keep] == labels.reshape(-1)[keep]).sum()), int(keep.sum())
    pred = np.asarray(logits).reshape(n, -1).argmax(axis=1)
    y = np.asarray(labels).reshape(-1)
    keep = y >= 0
    return int((pred[keep] == y[keep]).sum()), int(keep.sum())


def ratio(correct: int, labelled: int) -> float:
    """correct / labelled, NaN when nothing was labelled."""
    return float(correct) / labelled if labelled else float("nan")


def top1(predict: Callable[[np.ndarray], Any], x: np.ndarray, y: np.ndarray, *,
         batch: int = 256, fixed_batch: bool = False) -> float:
    """Top-1 accuracy of ``predict`` (a numpy batch -> logits) over (x, y) in batches.

    ``fixed_batch``: the model only takes batches of exactly ``batch`` rows, so the last partial
    batch is padded with copies of its last row and the padding's logits are dropped.
    """
    if len(x) == 0:
        raise BadInputError("validation data is empty", hint="give a data spec with a validation split")
    batch = max(1, int(batch))
    correct = labelled = 0
    for i in range(0, len(x), batch):
        xb = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
        n = len(xb)
        if fixed_batch and n < batch:
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - n, axis=0)])
        logits = predict(xb)
        c, k = count_correct(logits[:n], np.asarray(y[i:i + n]))
        correct += c
        labelled += k
    return ratio(correct, labelled)


def check_fits_data(what: str, data: str, num_classes: int, *, sample_shape=None, model_shape=None,
                    outputs=None) -> None:
    """BadInputError unless a classifier ``what`` can be scored on ``data``: the data has at least
    two classes, the model's per-sample input ``model_shape`` (C, H, W; dimensions that are not
    positive ints are dynamic and match anything) is the data's ``sample_shape``, and the model
    gives ``outputs`` logits per sample, one per class (a 10-class model "passing" on 2-class
    data would be a lie)."""
    if int(num_classes) < 2:
        raise BadInputError(f"data '{data}' has {num_classes} class; scoring a classifier needs at least 2",
                            hint="give data with two or more classes")
    if sample_shape is not None and model_shape is not None:
        ms, ds = tuple(model_shape), tuple(int(d) for d in sample_shape)
        fixed = all(isinstance(d, int) and d > 0 for d in ms)
        if len(ms) != len(ds) or any(isinstance(m, int) and m > 0 and m != d for m, d in zip(ms, ds)):
            how = "--resolution" if fixed and len(ms) == 3 and ms[0] == ds[0] else "data with the model's channels"
            raise BadInputError(f"{what} takes samples of shape {ms} but data '{data}' has {ds}",
                                hint=f"use {how} (the model's input is {ms})")
    if outputs is not None and int(outputs) != int(num_classes):
        raise BadInputError(f"{what} predicts {outputs} classes but data '{data}' has {num_classes}",
                            hint="use the data the model was trained on (same classes)")
