"""napari-deep-prl: find paramagnetic rim lesions in MS MRI with Deep-PRL.

The core modules (``io``, ``lesions``, ``patches``, ``simulate``, ``model``, ``train``,
``evaluate``, ``ratings``, ``active``) import neither Qt nor napari; the viewer layer lives in
``napari_deep_prl._napari``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-deep-prl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
