"""Pictures for people: patch galleries (demo, docs). Matplotlib with the Agg backend only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_deep_prl.base.tables import write_atomic
from napari_deep_prl.data.patches import PatchConfig


def patch_gallery(
    patches: np.ndarray,
    titles: Sequence[str],
    path: str | Path,
    *,
    channels: Sequence[str] = ("phase", "mp2rage"),
    suptitle: str | None = None,
    layout: Sequence[str] = PatchConfig().channels,
) -> Path:
    """Save the central axial slice of each patch, one column per patch, one row per channel
    shown (``channels``, by name; ``layout``: the patches' channels, :attr:`PatchConfig.channels`).

    The lesion outline (mask channel) is drawn over every image so the rim can be judged
    against the lesion edge.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(patches)
    mid = patches.shape[-1] // 2
    fig, axes = plt.subplots(len(channels), n, figsize=(1.6 * n, 1.7 * len(channels) + 0.4), squeeze=False)
    for j in range(n):
        outline = patches[j, list(layout).index("mask"), :, :, mid]
        for i, channel in enumerate(channels):
            ax = axes[i, j]
            ax.imshow(patches[j, list(layout).index(channel), :, :, mid].T, cmap="gray", vmin=0, vmax=1,
                      origin="lower", interpolation="nearest")
            ax.contour(outline.T, levels=[0.5], colors="tab:orange", linewidths=0.6, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=7)
            if j == 0:
                ax.set_ylabel(channel, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, dpi=130, format=path.suffix[1:] or "png"),
                            binary=True)
    finally:
        plt.close(fig)
