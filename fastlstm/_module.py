"""What every fastlstm module (the recurrent layers, Linear) shares: parameters with torch's
names, accumulated gradients, training and inference modes, and the checks of their
constructors' arguments."""

import numbers

import numpy as np

from ._functional import DTYPES, as_array, check_bool, describe


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be {options}, got {value!r}")
    return value


def check_dtype(dtype):
    """np.float32 or np.float64 as a NumPy dtype, or raise."""
    try:
        if dtype is None:  # np.dtype(None) is float64; torch's None means its default
            raise TypeError
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype}")
    return dtype


def check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
    return seed


def check_allocatable(what, count, dtype):
    """Raise a MemoryError naming ``what`` unless ``count`` numbers of ``dtype`` can be allocated.

    A module checks the sizes it was given this way before building its parameters one by one:
    a size too large to allocate (``num_layers=10**12``) would otherwise run out of memory, or
    time, before NumPy had a single impossible array to refuse. The trial array is released at
    once; its memory is never touched.
    """
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes <= np.iinfo(np.intp).max:
        try:
            np.empty(count, dtype)
            return
        except MemoryError:
            pass
    raise MemoryError(f"{what} need {count} numbers of {np.dtype(dtype)} ({nbytes / 2**30:.3g} "
                      f"GiB), more than can be allocated")


class Module:
    """Parameters (``{name: array}``, updated in place), their gradients ``grads`` with the same
    keys, accumulated by ``backward`` like torch's ``.grad``, and the training flag."""

    def __init__(self, params):
        self._params = params
        self.grads = {name: np.zeros_like(p) for name, p in params.items()}
        self.training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self):
        """Yield ``(name, array)`` for every parameter: the live arrays, updated in place."""
        yield from self._params.items()

    def parameters(self):
        """The live parameter arrays, in the order of :meth:`named_parameters`."""
        return list(self._params.values())

    def state_dict(self):
        """A dict of copies of the parameters, with torch.nn's names."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from ``state_dict``: NumPy arrays or torch tensors, torch's names.

        The keys must be exactly this layer's; every value must have the parameter's shape and a
        floating dtype (cast to the layer's dtype). Nothing changes unless every entry is right.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                            f"{describe(state_dict)}")
        expected = self._params.keys()
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match this layer: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        loaded = {}
        for name, current in self._params.items():
            value = as_array(f"state_dict[{name!r}]", state_dict[name])
            if value.dtype.kind != "f":
                raise TypeError(f"state_dict[{name!r}] must have a floating dtype, got "
                                f"{value.dtype}")
            if value.shape != current.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {current.shape}, got "
                                 f"{value.shape}")
            loaded[name] = value
        for name, value in loaded.items():
            self._params[name][...] = value

    def zero_grad(self):
        """Set every accumulated gradient to zero."""
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        """Training mode (the default): forward keeps what backward needs, and a recurrent
        layer's dropout acts."""
        self.training = check_bool("mode", mode)
        return self

    def eval(self):
        """Inference mode: nothing kept for backward, no dropout."""
        return self.train(False)
