"""Which fastlstm a process runs: a package directory uses its own compiled extension and no
other, so that Python code and kernels always come from one build; a source tree without one
refuses to import and says how to build it, rather than running some installed extension built
from another version. The test suite's child processes import the fastlstm the suite imported."""
import os
import shutil

import pytest
from helpers import FASTLSTM_HOME, run_python

import fastlstm

PACKAGE = FASTLSTM_HOME / "fastlstm"


def copy_sources(root):
    """``root``/fastlstm: the Python files of the imported package, without its extension."""
    target = root / "fastlstm"
    target.mkdir(parents=True)
    for path in PACKAGE.glob("*.py"):
        shutil.copy(path, target)
    return target


@pytest.mark.parametrize("source_tree", [True, False])
def test_a_package_without_its_extension_does_not_use_another_ones(tmp_path, source_tree):
    """Imported from ``tmp_path`` (as from a source tree's root: Python puts the working
    directory first on sys.path), with the tested fastlstm, extension and all, further down the
    path as an installed one would be: the import fails and says why, instead of running that
    other extension under these Python files."""
    copy_sources(tmp_path)
    if source_tree:
        (tmp_path / "setup.py").touch()
        (tmp_path / "csrc").mkdir()
    env = dict(os.environ, PYTHONPATH=str(FASTLSTM_HOME))
    result = run_python(["-c", "import fastlstm.native as n; print(n.__file__)"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, f"imported {result.stdout.strip()}"
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: fastlstm's compiled extension (fastlstm.native) is "
                              "not built in " + os.path.realpath(tmp_path / "fastlstm")), message
    if source_tree:
        assert "pip install -e ." in message and "python setup.py build_ext --inplace" in message
    else:
        assert "reinstall fastlstm" in message


def test_children_import_the_fastlstm_of_the_tests():
    code = "import fastlstm; print(fastlstm.__file__); print(fastlstm.native.__file__)"
    result = run_python(["-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [fastlstm.__file__, fastlstm.native.__file__]
