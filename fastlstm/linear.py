"""``fastlstm.Linear``: the affine read-out a recurrent model needs, with torch.nn.Linear's
arguments, parameter names, shapes and initialisation, and a hand-written backward."""

import numpy as np

from ._functional import as_float_array
from ._module import Module, check_allocatable, check_bool, check_dtype, check_int, check_seed


class Linear(Module):
    """``y = x W^T + b`` over the last axis of ``x``, whatever the axes before it.

    Parameters as torch.nn.Linear: ``weight`` (out_features, in_features) and ``bias``
    (out_features,), both uniform in ±1/sqrt(in_features) (torch's default), reproducible from
    ``seed``. ``backward(dy)`` returns dx and adds the parameter gradients into ``grads``; it
    needs the last forward to have run in training mode (the default), which keeps a copy of x.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        has_bias = check_bool("bias", bias)
        self.dtype = check_dtype(dtype)
        self.seed = check_seed(seed)
        check_allocatable(f"Linear(in_features={self.in_features}, out_features="
                          f"{self.out_features})'s parameters and their gradients",
                          2 * self.out_features * (self.in_features + has_bias), self.dtype)
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(self.in_features)
        params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features))}
        if has_bias:
            params["bias"] = rng.uniform(-bound, bound, self.out_features)
        super().__init__({name: p.astype(self.dtype) for name, p in params.items()})
        self._x = None    # the last training forward's input, for backward

    @property
    def weight(self):
        return self._params["weight"]

    @property
    def bias(self):
        """The bias array, or None for ``bias=False``."""
        return self._params.get("bias")

    def forward(self, x):
        """x (..., in_features) -> y (..., out_features)."""
        x = as_float_array("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} entries on its last "
                             f"axis, got shape {x.shape}")
        y = x @ self.weight.T
        if self.bias is not None:
            y += self.bias
        self._x = x.copy() if self.training else None
        return y

    def backward(self, dy):
        """Backpropagate ``dy`` (the shape of y) through the last training forward: returns dx
        and adds the gradients of weight and bias into ``grads``."""
        if self._x is None:
            raise RuntimeError("backward needs the last forward to have run in training mode "
                               "(layer.train()); there is no saved input")
        dy = as_float_array("dy", dy, self.dtype)
        expected = self._x.shape[:-1] + (self.out_features,)
        if dy.shape != expected:
            raise ValueError(f"dy must have the shape of y, {expected}, got {dy.shape}")
        dy2 = dy.reshape(-1, self.out_features)
        self.grads["weight"] += dy2.T @ self._x.reshape(-1, self.in_features)
        if self.bias is not None:
            self.grads["bias"] += dy2.sum(axis=0)
        return dy @ self.weight

    def __repr__(self):
        bias = "" if self.bias is not None else ", bias=False"
        dtype = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return f"Linear({self.in_features}, {self.out_features}{bias}{dtype})"
