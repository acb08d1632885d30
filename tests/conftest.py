"""Fixtures shared by the fastlstm tests; plain helper functions live in tests/helpers.py."""
import numpy as np
import pytest

import fastlstm


@pytest.fixture
def restore_threads():
    """Restore fastlstm's thread count after a test that changes it."""
    before = fastlstm.get_num_threads()
    try:
        yield before
    finally:
        fastlstm.set_num_threads(before)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so every parametrization draws its own data."""
    seed = sum(ord(c) * (k + 1) for k, c in enumerate(request.node.nodeid)) % 2**32
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def torch():
    """torch, on one thread (the machine is shared and the problems tiny); skips the test when
    torch is not installed."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def torch_and_fastlstm_on_one_thread(torch):
    """torch and fastlstm both on one thread, for a module whose problems are tiny: the machine
    is shared (restored afterwards)."""
    before = fastlstm.get_num_threads()
    fastlstm.set_num_threads(1)
    yield
    fastlstm.set_num_threads(before)
