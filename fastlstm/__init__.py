"""fastlstm: Elman RNN, LSTM and GRU layers for the CPU, forward and backpropagation through time.

``fastlstm.RNN``, ``fastlstm.LSTM`` and ``fastlstm.GRU`` follow torch.nn; ``fastlstm.reference``
is the NumPy specification and ``fastlstm.native`` the same functions in C; ``fastlstm.torch``
runs torch.nn's recurrent modules on them. ``python -m fastlstm demo`` is the place to start.
"""
import importlib.machinery
import os

# Loads the OpenBLAS that fastlstm.native is linked against (scipy-openblas32), before that
# extension is imported, with the kernels that suit this CPU (see _blas.py).
from . import _blas

_blas.load()


def _extension_error(here):
    """The ImportError for a package directory ``here`` without its compiled extension."""
    root = os.path.dirname(here)
    if os.path.exists(os.path.join(root, "setup.py")) and os.path.isdir(os.path.join(root,
                                                                                    "csrc")):
        how = (f"this is a source tree, which Python found first because it runs from {root} "
               f"(or has it on sys.path). Build it in place: pip install -e . (or python "
               f"setup.py build_ext --inplace) in {root}; or, to use an installed fastlstm, run "
               f"Python from another directory")
    else:
        how = "reinstall fastlstm (pip install --force-reinstall fastlstm)"
    return ImportError(f"fastlstm's compiled extension (fastlstm.native) is not built in "
                       f"{here}: {how}")


# The extension comes from this package's own directory and no other, so that the Python code and
# the kernels are always one build: a source tree runs its own in-place build, an installed
# fastlstm its own. Python would find others: an editable install's finder (on sys.meta_path
# after the path finder) resolves fastlstm.native in the tree it was installed from when this
# directory has none, and until issue 22 this package extended its __path__ (pkgutil.extend_path)
# to fall through to an installed one. Either ran kernels built from another version, and tests
# passed against stale kernels. With the extension here, `from . import native` finds it first:
# the path finder searches __path__, this directory, before any finder after it.
_here = os.path.dirname(os.path.realpath(__file__))
if importlib.machinery.PathFinder.find_spec(f"{__name__}.native", [_here]) is None:
    raise _extension_error(_here)
from . import native  # noqa: E402

from . import losses, optim, reference  # noqa: E402
from .layers import GRU, LSTM, RNN  # noqa: E402
from .linear import Linear  # noqa: E402
from .native import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.2.0"
__all__ = ["RNN", "LSTM", "GRU", "Linear", "losses", "optim", "reference", "native",
           "set_num_threads", "get_num_threads"]
