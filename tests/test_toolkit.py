"""The training toolkit: Linear and the losses against central finite differences (float64, as in
test_gradcheck.py, whose docstring gives the 1e-6 tolerance), the optimizers against steps
computed by hand and against torch.optim, and gradient clipping."""
import numpy as np
import pytest
from helpers import FD_TOL, assert_close, fd_grad

import fastlstm
from fastlstm import losses, optim


# ---------------------------------------------------------------- Linear


@pytest.mark.parametrize("shape", [(3,), (2, 3), (4, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_against_finite_differences(shape, bias, rng):
    lin = fastlstm.Linear(3, 5, bias=bias, dtype=np.float64, seed=1)
    x = rng.standard_normal(shape)
    R = rng.standard_normal(shape[:-1] + (5,))

    def loss():
        return float(np.sum(lin(x) * R))

    y = lin(x)
    assert y.shape == shape[:-1] + (5,)
    dx = lin.backward(R)
    assert_close(dx, fd_grad(loss, x), FD_TOL, "dx")
    for name, p in lin.named_parameters():
        assert_close(lin.grads[name], fd_grad(loss, p), FD_TOL, name)
    assert [name for name, _ in lin.named_parameters()] == ["weight", "bias"][:1 + bias]
    assert (lin.bias is None) == (not bias)


def test_linear_init_names_and_gradient_accumulation():
    lin = fastlstm.Linear(16, 4, seed=3)
    assert lin.weight.shape == (4, 16) and lin.bias.shape == (4,)
    assert lin.weight.dtype == np.float32
    assert np.abs(lin.weight).max() <= 1 / 4 and np.abs(lin.bias).max() <= 1 / 4
    assert np.array_equal(fastlstm.Linear(16, 4, seed=3).weight, lin.weight)
    x = np.ones((2, 16), np.float32)
    lin(x)
    lin.backward(np.ones((2, 4), np.float32))
    once = lin.grads["weight"].copy()
    lin(x)
    lin.backward(np.ones((2, 4), np.float32))
    assert np.array_equal(lin.grads["weight"], 2 * once)
    lin.zero_grad()
    assert not lin.grads["weight"].any()
    assert set(lin.state_dict()) == {"weight", "bias"}
    assert repr(lin) == "Linear(16, 4)"


def test_linear_matches_torch(torch):
    lin = fastlstm.Linear(3, 2, dtype=np.float64, seed=0)
    module = torch.nn.Linear(3, 2, dtype=torch.float64)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 5, 3))
    tx = torch.from_numpy(x).requires_grad_()
    module(tx).sum().backward()
    y = lin(x)
    dx = lin.backward(np.ones_like(y))
    assert_close(y, module(tx).detach().numpy(), 1e-12, "y")
    assert_close(dx, tx.grad.numpy(), 1e-12, "dx")
    assert_close(lin.grads["weight"], module.weight.grad.numpy(), 1e-12, "weight")


def test_linear_errors():
    lin = fastlstm.Linear(3, 2)
    with pytest.raises(RuntimeError, match="backward needs the last forward"):
        lin.backward(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"in_features=3 entries on its last axis, got shape"):
        lin(np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32"):
        lin(np.zeros((4, 3)))
    lin(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have the shape of y, \(4, 2\)"):
        lin.backward(np.zeros((4, 3), np.float32))
    lin.eval()(np.zeros((4, 3), np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        lin.backward(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="out_features must be an integer >= 1"):
        fastlstm.Linear(3, 0)


# ---------------------------------------------------------------- losses


def test_mse_against_finite_differences(rng):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, grad = losses.mse(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-15)
    assert_close(grad, fd_grad(lambda: losses.mse(pred, target)[0], pred), FD_TOL, "dpred")


@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_cross_entropy_against_finite_differences(shape, rng):
    logits = 3 * rng.standard_normal(shape + (4,))
    labels = rng.integers(0, 4, shape)
    loss, grad = losses.cross_entropy(logits, labels)
    z = logits.reshape(-1, 4)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(len(z)), labels.reshape(-1)])),
                                 rel=1e-13)
    fd = fd_grad(lambda: losses.cross_entropy(logits, labels)[0], logits)
    assert_close(grad, fd, FD_TOL, "dlogits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_large_logits(dtype):
    logits = np.array([[1e4, 0, -1e4], [-1e4, 0, 1e4]], dtype)
    loss, grad = losses.cross_entropy(logits, np.array([0, 0]))
    # the first row is certain and right (loss 0), the second certain and wrong (loss 2e4)
    assert loss == pytest.approx(1e4, rel=1e-6)
    assert np.isfinite(grad).all()
    assert_close(grad, np.array([[0, 0, 0], [-0.5, 0, 0.5]]), 1e-6, "grad")


def test_losses_match_torch(torch, rng):
    logits, labels = rng.standard_normal((6, 5)) * 20, rng.integers(0, 5, 6)
    t = torch.from_numpy(logits).requires_grad_()
    torch.nn.functional.cross_entropy(t, torch.from_numpy(labels)).backward()
    loss, grad = losses.cross_entropy(logits, labels)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(
        t, torch.from_numpy(labels)).item(), rel=1e-12)
    assert_close(grad, t.grad.numpy(), 1e-12, "cross-entropy grad")


def test_loss_errors():
    with pytest.raises(ValueError, match=r"target must have the shape of pred, \(2,\)"):
        losses.mse(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        losses.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be integers"):
        losses.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        losses.cross_entropy(np.zeros((2, 3)), np.array([[0, 1]]))


# ---------------------------------------------------------------- optimizers


class Params:
    """A stand-in module with one parameter and a gradient set by the test."""

    def __init__(self, p):
        self.p = np.array(p, np.float64)
        self.grads = {"p": np.zeros_like(self.p)}

    def named_parameters(self):
        yield "p", self.p

    def zero_grad(self):
        self.grads["p"].fill(0)


def steps(opt, module, grads):
    """Run opt.step() with each gradient in turn; the parameter after each step."""
    out = []
    for g in grads:
        module.grads["p"][...] = g
        opt.step()
        out.append(module.p.copy())
    return out


def test_sgd_with_momentum_by_hand():
    m = Params([1.0, -2.0])
    after = steps(optim.SGD(m, lr=0.1, momentum=0.9), m, [[1.0, 2.0], [3.0, -1.0]])
    # step 1: b = g = (1, 2); p = (1, -2) - 0.1 (1, 2) = (0.9, -2.2)
    # step 2: b = 0.9 (1, 2) + (3, -1) = (3.9, 0.8); p = (0.9, -2.2) - 0.1 b = (0.51, -2.28)
    assert np.allclose(after, [[0.9, -2.2], [0.51, -2.28]], rtol=0, atol=1e-15)


def test_sgd_nesterov_and_weight_decay_by_hand():
    m = Params([2.0])
    after = steps(optim.SGD(m, lr=0.5, momentum=0.5, nesterov=True, weight_decay=0.25), m,
                  [[1.0]])
    # g = 1 + 0.25 * 2 = 1.5; b = 1.5; step g + 0.5 b = 2.25; p = 2 - 0.5 * 2.25 = 0.875
    assert after[0][0] == pytest.approx(0.875, rel=1e-15)


def test_adam_by_hand():
    m = Params([1.0])
    after = steps(optim.Adam(m, lr=0.1, betas=(0.5, 0.75), eps=0.0), m, [[2.0], [-1.0]])
    # step 1: m = 1, v = 1; m_hat = 1 / 0.5 = 2, v_hat = 1 / 0.25 = 4; p = 1 - 0.1 * 2 / 2 = 0.9
    # step 2: m = 0.5 - 0.5 = 0, so p stays 0.9
    assert after[0][0] == pytest.approx(0.9, rel=1e-15)
    assert after[1][0] == pytest.approx(0.9, rel=1e-15)


def test_rmsprop_by_hand():
    m = Params([1.0])
    after = steps(optim.RMSprop(m, lr=0.1, alpha=0.75, eps=0.0, momentum=0.5), m,
                  [[2.0], [2.0]])
    # step 1: v = 0.25 * 4 = 1; step g / sqrt(v) = 2; b = 2; p = 1 - 0.2 = 0.8
    # step 2: v = 0.75 + 1 = 1.75; step 2 / sqrt(1.75); b = 1 + 2 / sqrt(1.75); p = 0.8 - 0.1 b
    assert after[0][0] == pytest.approx(0.8, rel=1e-15)
    assert after[1][0] == pytest.approx(0.8 - 0.1 * (1 + 2 / np.sqrt(1.75)), rel=1e-15)


OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "SGD-nesterov": dict(lr=0.05, momentum=0.8, nesterov=True),
    "Adam": dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_torch_over_steps(name, torch, rng):
    """Five steps on a recurrent layer and a Linear head with fixed random gradients."""
    kwargs = OPTIMIZERS[name]
    cls = name.split("-")[0]
    layers = [fastlstm.GRU(3, 4, dtype=np.float64, seed=0),
              fastlstm.Linear(4, 2, dtype=np.float64, seed=1)]
    params = [torch.from_numpy(p.copy()).requires_grad_()
              for layer in layers for _, p in layer.named_parameters()]
    ours, theirs = getattr(optim, cls)(layers, **kwargs), getattr(torch.optim, cls)(params,
                                                                                     **kwargs)
    for _ in range(5):
        grads = [rng.standard_normal(p.shape) for p in params]
        for g, (layer, key) in zip(grads, [(layer, key) for layer in layers
                                           for key in layer.grads]):
            layer.grads[key][...] = g
        for g, p in zip(grads, params):
            p.grad = torch.from_numpy(g)
        ours.step()
        theirs.step()
    mine = [p for layer in layers for _, p in layer.named_parameters()]
    for a, b in zip(mine, params):
        assert_close(a, b.detach().numpy(), 1e-12, name)


def test_zero_grad_clears_every_module():
    layers = [fastlstm.LSTM(2, 3), fastlstm.Linear(3, 1)]
    for layer in layers:
        for g in layer.grads.values():
            g.fill(1)
    optim.Adam(layers).zero_grad()
    assert not any(g.any() for layer in layers for g in layer.grads.values())


def test_clip_grad_norm():
    a, b = Params([0.0, 0.0]), Params([0.0])
    a.grads["p"][...] = [3.0, 0.0]
    b.grads["p"][...] = [4.0]
    assert optim.clip_grad_norm([a, b], max_norm=10) == pytest.approx(5.0, rel=1e-15)
    assert a.grads["p"].tolist() == [3.0, 0.0]            # below max_norm: unchanged
    assert optim.clip_grad_norm([a, b], max_norm=1) == pytest.approx(5.0, rel=1e-15)
    clipped = np.sqrt(np.sum(a.grads["p"] ** 2) + np.sum(b.grads["p"] ** 2))
    assert clipped == pytest.approx(1.0, rel=1e-6)
    assert a.grads["p"][0] / b.grads["p"][0] == pytest.approx(0.75, rel=1e-15)   # direction kept


def test_optimizer_errors():
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastlstm module"):
        optim.SGD([fastlstm.Linear(2, 2), np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        optim.Adam(fastlstm.Linear(2, 2), lr=-1)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a finite number >= 0.0 and < 1.0"):
        optim.Adam(fastlstm.Linear(2, 2), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        optim.SGD(fastlstm.Linear(2, 2), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="at least one module"):
        optim.RMSprop([])
