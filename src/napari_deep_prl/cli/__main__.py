"""``python -m napari_deep_prl.cli`` runs the ``deep-prl`` command."""

import sys

from napari_deep_prl.cli import main

sys.exit(main())
