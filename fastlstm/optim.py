"""Optimizers over fastlstm's modules, with torch.optim's update rules and defaults.

    opt = fastlstm.optim.Adam([lstm, head], lr=1e-3)
    opt.zero_grad()
    ...                                   # forward, loss, backward: fills each module's grads
    fastlstm.optim.clip_grad_norm([lstm, head], max_norm=1.0)
    opt.step()                            # updates every parameter in place

An optimizer takes a module or a list of modules: anything with ``named_parameters()`` and a
``grads`` dict with the same keys (fastlstm's layers and Linear). Each update runs in the
parameters' dtype, like torch's. The hyperparameters are attributes read at every step, so a
schedule sets them between steps (``opt.lr = ...``).
"""

import math
import numbers

import numpy as np

from ._functional import describe
from ._module import check_bool


def _modules(layers):
    """``layers`` as a list of modules, checked."""
    if hasattr(layers, "named_parameters"):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"layers must be a module or a list of modules, got "
                        f"{describe(layers)}") from None
    for k, layer in enumerate(layers):
        if not (hasattr(layer, "named_parameters") and isinstance(getattr(layer, "grads", None),
                                                                   dict)):
            raise TypeError(f"layers[{k}] must be a fastlstm module (with named_parameters() "
                            f"and grads), got {describe(layer)}")
        names = [name for name, _ in layer.named_parameters()]
        if sorted(names) != sorted(layer.grads):
            raise ValueError(f"layers[{k}].grads must have one gradient per parameter, named "
                             f"{names}, got {list(layer.grads)}")
    if not layers:
        raise ValueError("layers must hold at least one module")
    return layers


def _check_number(name, value, low=0.0, high=None, low_open=False, finite=True):
    """``value`` as a float, or a ValueError: a real number (finite unless ``finite`` is False)
    at least ``low`` (above it with ``low_open``) and below ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (value > low if low_open else value >= low) or \
            (high is not None and not value < high) or (finite and not math.isfinite(value)):
        bounds = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and < {high}")
        raise ValueError(f"{name} must be a {'finite ' if finite else ''}number {bounds}, got "
                         f"{value!r}")
    return float(value)


class Optimizer:
    """What the optimizers share: the modules, ``zero_grad``, and a ``step`` that hands each
    parameter, its gradient and its own state dict to the subclass's ``_update``."""

    def __init__(self, layers, lr, weight_decay):
        self.layers = _modules(layers)
        self.lr = _check_number("lr", lr)
        self.weight_decay = _check_number("weight_decay", weight_decay)
        self.state = [{name: {} for name, _ in layer.named_parameters()} for layer in self.layers]

    def zero_grad(self):
        """Clear every module's accumulated gradients."""
        for layer in self.layers:
            layer.zero_grad()

    def step(self):
        """Update every parameter in place from its module's ``grads``."""
        for layer, states in zip(self.layers, self.state):
            for name, p in layer.named_parameters():
                g = layer.grads[name]
                if self.weight_decay:
                    g = g + p.dtype.type(self.weight_decay) * p
                self._update(p, g, states[name])

    def _update(self, p, g, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, with torch.optim.SGD's momentum: ``b = momentum b + g``
    (``b = g`` on the first step), then ``p -= lr b`` (Nesterov: ``p -= lr (g + momentum b)``)."""

    def __init__(self, layers, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(layers, lr, weight_decay)
        self.momentum = _check_number("momentum", momentum)
        self.nesterov = check_bool("nesterov", nesterov)
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs a momentum > 0")

    def _update(self, p, g, state):
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = g.copy()
            else:
                buf *= p.dtype.type(self.momentum)
                buf += g
            g = g + p.dtype.type(self.momentum) * buf if self.nesterov else buf
        p -= p.dtype.type(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as torch.optim.Adam: moving averages ``m`` of g and ``v`` of
    g^2, corrected for their start at zero, and ``p -= lr m_hat / (sqrt(v_hat) + eps)``."""

    def __init__(self, layers, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(layers, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(_check_number(f"betas[{k}]", b, 0.0, 1.0) for k, b in enumerate(betas))
        self.eps = _check_number("eps", eps)

    def _update(self, p, g, state):
        beta1, beta2 = self.betas
        if not state:
            state.update(t=0, m=np.zeros_like(p), v=np.zeros_like(p))
        state["t"] += 1
        t, m, v = state["t"], state["m"], state["v"]
        m *= p.dtype.type(beta1)
        m += p.dtype.type(1 - beta1) * g
        v *= p.dtype.type(beta2)
        v += p.dtype.type(1 - beta2) * g * g
        denom = np.sqrt(v) / p.dtype.type(np.sqrt(1 - beta2 ** t)) + p.dtype.type(self.eps)
        p -= p.dtype.type(self.lr / (1 - beta1 ** t)) * m / denom


class RMSprop(Optimizer):
    """RMSprop (Tieleman & Hinton 2012), as torch.optim.RMSprop: a moving average ``v`` of g^2,
    and ``p -= lr g / (sqrt(v) + eps)``, through a momentum buffer when momentum > 0."""

    def __init__(self, layers, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
        super().__init__(layers, lr, weight_decay)
        self.alpha = _check_number("alpha", alpha, 0.0, 1.0)
        self.eps = _check_number("eps", eps)
        self.momentum = _check_number("momentum", momentum)

    def _update(self, p, g, state):
        if not state:
            state["v"] = np.zeros_like(p)
        v = state["v"]
        v *= p.dtype.type(self.alpha)
        v += p.dtype.type(1 - self.alpha) * g * g
        step = g / (np.sqrt(v) + p.dtype.type(self.eps))
        if self.momentum:
            buf = state.setdefault("momentum", np.zeros_like(p))
            buf *= p.dtype.type(self.momentum)
            buf += step
            step = buf
        p -= p.dtype.type(self.lr) * step


def clip_grad_norm(layers, max_norm):
    """Scale every gradient of ``layers`` in place so that their joint L2 norm is at most
    ``max_norm`` (as torch.nn.utils.clip_grad_norm_: by max_norm / (norm + 1e-6) when that is
    below 1); return the norm before clipping."""
    layers = _modules(layers)
    max_norm = _check_number("max_norm", max_norm, finite=False)   # inf: measure, never clip
    grads = [g for layer in layers for g in layer.grads.values()]
    norm = float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads)))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads:
            g *= g.dtype.type(scale)
    return norm
