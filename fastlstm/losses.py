"""Losses that return their gradient: ``loss, dloss_dinput = mse(pred, target)``.

Both average over every element (over every row for cross-entropy), as torch's default
``reduction="mean"`` does; the loss is a Python float, the gradient an array of the input's
shape and dtype, ready for a layer's ``backward``.
"""

import numpy as np

from ._functional import as_array, as_float_array, describe


def mse(pred, target):
    """Mean squared error ``mean((pred - target)^2)`` and its gradient ``2 (pred - target) / n``
    with respect to ``pred``."""
    pred = as_float_array("pred", pred)
    target = as_float_array("target", target, pred.dtype)
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred, {pred.shape}, got "
                         f"{target.shape}")
    if pred.size == 0:
        raise ValueError("pred must have at least one element to average over")
    err = pred - target
    return float(np.mean(np.square(err, dtype=np.float64))), err * pred.dtype.type(2 / err.size)


def cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer class labels, and its gradient
    ``(softmax(logits) - onehot(labels)) / n`` with respect to the logits.

    logits (..., C), labels (...) of integers in [0, C). Computed from
    ``log softmax(z) = z - max(z) - log(sum(exp(z - max(z))))``: no exp of a large logit ever
    overflows, and a hopeless prediction costs a large finite loss, not inf.
    """
    logits = as_float_array("logits", logits)
    if logits.ndim == 0 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be (..., classes) with classes >= 1, got shape "
                         f"{logits.shape}")
    labels = as_array("labels", labels)
    C = logits.shape[-1]
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (class indices), got {describe(labels)}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {logits.shape[:-1]} (logits without the class "
                         f"axis), got {labels.shape}")
    if labels.size == 0:
        raise ValueError("labels must have at least one element to average over")
    if labels.min() < 0 or labels.max() >= C:
        raise ValueError(f"labels must be class indices in [0, {C}), got values from "
                         f"{labels.min()} to {labels.max()}")
    z = logits.reshape(-1, C)
    rows = np.arange(z.shape[0])
    shifted = z - z.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    log_p = shifted[rows, labels.reshape(-1)] - np.log(sums[:, 0])
    grad = exp / sums
    grad[rows, labels.reshape(-1)] -= 1
    grad *= logits.dtype.type(1 / z.shape[0])
    return float(-np.mean(log_p, dtype=np.float64)), grad.reshape(logits.shape)
