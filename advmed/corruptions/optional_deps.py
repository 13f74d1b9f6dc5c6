"""The corruptions' optional dependencies, imported when first needed, with an error that says how
to install what is missing.

MedMNIST-C's reference corruptions (Di Salvo et al., 2024) need the ``medmnistc`` package, which
``make install`` installs with ``--no-deps`` (its pins would downgrade scikit-image), and its blur
module loads ImageMagick's MagickWand library through Wand when imported. Neither is needed to
import :mod:`advmed.corruptions` or to run the corruptions that have an exact torch implementation.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MEDMNISTC_INSTALL = ("pip install --no-deps medmnistc==0.1.0 (what `make install` does; --no-deps because its "
                     "pins would downgrade scikit-image, and it needs nothing beyond advmed's own dependencies)")
IMAGEMAGICK_INSTALL = (
    "install ImageMagick's MagickWand library: `apt-get install libmagickwand-6.q16-6` on Debian/Ubuntu, "
    "`conda install -c conda-forge imagemagick`, or `module load imagemagick` on a cluster; then, if it lies in "
    "a non-standard place, set MAGICK_HOME to its prefix (Wand looks for the library there); the Python side is "
    "`pip install Wand`")
# What to pip-install when medmnistc imports a module that is not there.
_PIP_NAMES = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "scipy": "scipy", "torchvision": "torchvision",
              "PIL": "pillow"}

# The import function, a module attribute so that tests can simulate a missing package.
_import_module = importlib.import_module


def _top(name: str | None) -> str:
    return (name or "").split(".")[0]


def import_wand() -> tuple[ModuleType, ModuleType]:
    """``wand.api`` (whose ``library`` is ImageMagick's MagickWand) and ``wand.image``, or an
    ImportError saying how to install ImageMagick (Wand raises a bare ImportError when it cannot
    find the library)."""
    try:
        return _import_module("wand.api"), _import_module("wand.image")
    except ImportError as e:
        raise ImportError(f"MedMNIST-C's motion blur calls ImageMagick through Wand, which could not be loaded "
                          f"({e}): {IMAGEMAGICK_INSTALL}") from e


def import_medmnistc(module: str) -> ModuleType:
    """``medmnistc.corruptions.<module>``, or an ImportError that names what is missing and how to
    install it (medmnistc itself, ImageMagick for its blur module, or one of its imports)."""
    try:
        return _import_module(f"medmnistc.corruptions.{module}")
    except ImportError as e:
        missing = _top(getattr(e, "name", None))
        if missing == "medmnistc":
            raise ImportError(f"MedMNIST-C's reference corruptions need the medmnistc package, which is not "
                              f"installed: {MEDMNISTC_INSTALL}") from e
        if missing == "wand" or "MagickWand" in str(e):
            raise ImportError(f"medmnistc.corruptions.{module} loads ImageMagick through Wand when imported, which "
                              f"failed ({e}): {IMAGEMAGICK_INSTALL}") from e
        hint = f"pip install {_PIP_NAMES[missing]}" if missing in _PIP_NAMES else "install it"
        raise ImportError(f"medmnistc.corruptions.{module} could not be imported ({e}); medmnistc was installed "
                          f"--no-deps, so its imports come from advmed's environment: {hint}") from e
