"""fastlstm: Elman RNN, LSTM and GRU layers for the CPU, forward and backpropagation through time.

``fastlstm.RNN``, ``fastlstm.LSTM`` and ``fastlstm.GRU`` follow torch.nn; ``fastlstm.reference``
is the NumPy specification and ``fastlstm.native`` the same functions in C; ``fastlstm.torch``
runs torch.nn's recurrent modules on them. ``python -m fastlstm demo`` is the place to start.
"""
import pkgutil

# In a source checkout (running `python -m fastlstm` or the tests from the repository root),
# Python finds this directory before the installed package, and only the installed package holds
# the compiled extension. extend_path lets `fastlstm.native` fall through to it.
__path__ = pkgutil.extend_path(__path__, __name__)

# Loads the OpenBLAS that fastlstm.native is linked against (scipy-openblas32), before that
# extension is imported, with the kernels that suit this CPU (see _blas.py).
from . import _blas  # noqa: E402

_blas.load()

from . import losses, native, optim, reference  # noqa: E402
from .layers import GRU, LSTM, RNN  # noqa: E402
from .linear import Linear  # noqa: E402
from .native import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"
__all__ = ["RNN", "LSTM", "GRU", "Linear", "losses", "optim", "reference", "native",
           "set_num_threads", "get_num_threads"]
