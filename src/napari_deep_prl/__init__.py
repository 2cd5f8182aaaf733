"""napari-deep-prl: find paramagnetic rim lesions in MS MRI with Deep-PRL.

The core (``base``, ``data``, ``model``, ``ratings``, ``simulate``, ``scoring``, ``evaluation``,
``active``, ``cli``) imports neither Qt nor napari; the viewer layer lives in
``napari_deep_prl._napari``.
"""

#: The package version, written here only: pyproject.toml reads it for the package metadata, so
#: ``deep-prl --version``, checkpoints, rating rows and the installed package agree.
__version__ = "0.1.0"

__all__ = ["__version__"]
