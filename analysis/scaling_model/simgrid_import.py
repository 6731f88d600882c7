"""`simgrid`, from this interpreter's path or from Debian's python3-simgrid (built for CPython 3.11)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DEBIAN_SO = Path("/usr/lib/python3/dist-packages/simgrid.cpython-311-x86_64-linux-gnu.so")
INSTALL_HINT = "apt-get install -y python3-simgrid (or: make install-simgrid)"


def load_simgrid() -> ModuleType:
    """The module, or ImportError naming the package to install.

    Debian's module sits among other system packages; loading that one file keeps the venv's numpy
    and friends first on the path."""
    try:
        import simgrid
        return simgrid
    except ImportError:
        pass
    if not DEBIAN_SO.exists() or sys.version_info[:2] != (3, 11):
        raise ImportError(f"SimGrid's Python bindings are missing for Python "
                          f"{sys.version_info[0]}.{sys.version_info[1]}: {INSTALL_HINT}")
    loader = importlib.machinery.ExtensionFileLoader("simgrid", str(DEBIAN_SO))
    spec = importlib.util.spec_from_file_location("simgrid", DEBIAN_SO, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["simgrid"] = module
    return module
