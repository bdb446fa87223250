"""diffcheck: differential verification of sparse-attention index kernels.

The repository keeps ``kernels/``, ``refimpl/`` and ``fixtures/`` at its top level (the design
card's layout), but they are diffcheck's subpackages: ``diffcheck.kernels`` and so on. A wheel
installs them inside ``diffcheck/``, so an engine's own ``kernels`` package is never shadowed;
in a source checkout (an editable install, or running from the repository) the folders next to
this one are found here.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_CHECKOUT = _Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "refimpl" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 - a package's __path__
