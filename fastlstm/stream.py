"""Streaming inference: a layer fed one time step at a time, as data arrives.

``layer.stream(batch_size)`` returns a :class:`Stream`::

    lstm = fastlstm.LSTM(10, 128, num_layers=2)
    s = lstm.stream(batch_size=1)
    for x_t in source:                  # x_t: (1, 10)
        y_t = s.step(x_t)               # (1, 128): the top layer's output at this step
    h, c = s.state                      # (2, 1, 128) each, like lstm's h_n and c_n
    s.reset()                           # zeros again, for the next stream

Steps equal a whole-sequence forward of the same inputs (in eval mode: no dropout). The stream
takes a contiguous copy of the weights when it is made, for its kernel to read at every step;
make a new one after changing the layer's parameters.
"""

import numpy as np

from . import native, reference
from ._functional import as_float_array, describe, expect_shape
from ._module import check_allocatable, check_int

class Stream:
    """Step a stacked unidirectional layer through time, one step per call (see the module).

    ``step(x_t, out=None)``: x_t (batch_size, input_size) in; returns the top layer's output
    (batch_size, output_size), a new array, or ``out`` filled in place when given.
    ``state``: copies of the current states, in the layer's own shapes: h (num_layers,
    batch_size, output_size), and for the LSTM the pair (h, c).
    ``reset(state=None)``: start again from zeros, or from ``state`` given like ``state``.
    """

    def __init__(self, layer, batch_size):
        if layer.bidirectional:
            raise ValueError("stream() needs a unidirectional layer: the reverse direction of a "
                             "bidirectional layer reads the whole sequence, from its end")
        self.layer = layer
        self.batch_size = check_int("batch_size", batch_size, 1)
        check_allocatable(f"the states of a stream of batch_size={self.batch_size}",
                          layer.num_layers * self.batch_size * sum(layer._state_sizes()),
                          layer.dtype)
        nonlinearity = getattr(layer, "nonlinearity", None)
        weights = [layer._weights(k) for k in range(layer.num_layers)]
        if layer.backend == "native":
            self._stepper = native.Stepper(layer.cell, nonlinearity, weights, self.batch_size,
                                           layer.dtype, layer._feedback or ())
        elif layer.feedback is not None:
            self._stepper = _StackStepper(layer, weights, self.batch_size)
        else:
            self._stepper = _ReferenceStepper(layer, weights, self.batch_size)
        # The stepper's own method: a step costs one call, no Python in between.
        self.step = self._stepper.step

    @property
    def state(self):
        states = self._stepper.get_state()
        return states if len(states) > 1 else states[0]

    def reset(self, state=None):
        """Start the next step from zeros, or from ``state`` (shaped like :attr:`state`)."""
        B = self.batch_size
        if state is None:
            sizes = self.layer._state_sizes()
            states = tuple(np.zeros((self.layer.num_layers, B, n), self.layer.dtype)
                           for n in sizes)
        else:
            states = self.layer._check_states("state", state, B)
        self._stepper.set_state(states)

    def __repr__(self):
        return f"Stream({self.layer!r}, batch_size={self.batch_size})"


class _ReferenceStepper:
    """The stepper of a reference-backend layer: each step a whole-sequence forward of T = 1
    through every layer, with the reference functions."""

    def __init__(self, layer, weights, B):
        self.layer, self.B = layer, B
        self.weights = [{kind: a.copy() for kind, a in w.items()} for w in weights]
        self.states = tuple(np.zeros((layer.num_layers, B, n), layer.dtype)
                            for n in layer._state_sizes())

    def step(self, x, out=None):
        layer = self.layer
        x = as_float_array("x", x, layer.dtype, ndim=2)
        expect_shape("x", x, (self.B, layer.input_size), "(batch_size, input_size)")
        shape = (self.B, layer.output_size)
        if out is not None and not (isinstance(out, np.ndarray) and out.dtype == layer.dtype
                                    and out.shape == shape and out.flags.c_contiguous
                                    and out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous array of shape {shape} and "
                             f"dtype {layer.dtype}, got {describe(out)}")
        x = self._step(x)
        if out is None:
            return x
        out[...] = x
        return out

    def _step(self, x):
        layer = self.layer
        one_step = np.full(1, self.B)
        for k, w in enumerate(self.weights):
            # inference: nothing is kept for a backward, whatever the layer's mode
            x, finals, _ = layer._cell_forward(x, tuple(s[k] for s in self.states), w, one_step,
                                               training=False)
            for s, f in zip(self.states, finals):
                s[k] = f
        return x

    def get_state(self):
        return tuple(s.copy() for s in self.states)

    def set_state(self, states):
        for s, new in zip(self.states, states):
            s[...] = new


class _StackStepper(_ReferenceStepper):
    """The stepper of a reference layer with feedback: each step reference.stack_forward over
    T = 1 (the native one has native.Stepper).

    The carried states are all the stream needs: the output a source feeds back at step t is
    its h after step t-1, which is its carried state, and stack_forward reads a source's
    fed-back output of the step before the first from its initial state."""

    def _step(self, x):
        layer = self.layer
        y, finals, _ = reference.stack_forward(
            layer.cell, x, [tuple(s[k] for s in self.states) for k in range(layer.num_layers)],
            self.weights, layer._feedback, nonlinearity=getattr(layer, "nonlinearity", "tanh"),
            batch_sizes=np.full(1, self.B, np.int64), training=False)
        for k, final in enumerate(finals):
            for s, f in zip(self.states, final):
                s[k] = f
        return y
