"""Pictures for people: patch galleries (demo, error galleries, docs). Matplotlib with the Agg
backend only.

A gallery shows every image a subject has around each lesion — its susceptibility image, then
each structural contrast — one row per contrast, labelled by name (:func:`display_patches`). The
structural images and a phase are shown as the network sees them (per-subject scaling, the phase
paramagnetic-dark as the package reads it); a QSM in its own sign and units, paramagnetic
bright, over ±:data:`QSM_WINDOW_PPM` ppm, so its grey levels mean the same ppm in every picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_deep_prl.base.tables import write_atomic
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY, model_contrasts
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import Lesions
from napari_deep_prl.data.patches import PatchConfig, extract_patches, image_patches

#: Half the grey window (ppm) a QSM is shown over, around 0: a rim's few hundredths of a ppm
#: above its lesion show, veins (0.2-0.5 ppm) saturate.
QSM_WINDOW_PPM = 0.15
#: How contrasts are named in pictures (rows of a gallery).
CONTRAST_LABELS = {"phase": "phase", "qsm": f"QSM\n±{QSM_WINDOW_PPM:g} ppm", "mp2rage": "MP2RAGE",
                   "t1w": "T1w", "flair": "FLAIR"}


def display_patches(subject: Subject, lesions: Lesions, ids: Sequence[int] | np.ndarray,
                    size: int = PatchConfig().size) -> tuple[np.ndarray, tuple[str, ...]]:
    """Patches ``(n, c, s, s, s)`` in [0, 1] of the lesions ``ids`` for pictures, and their
    channels: the subject's susceptibility image, its structural images (canonical order), then
    ``"mask"`` (see the module doc for how each is shown)."""
    contrasts = model_contrasts([subject.susceptibility, *subject.structural], f"subject {subject.subject}")
    config = PatchConfig(size=size, contrasts=contrasts)
    ids = np.asarray(ids)
    patches = extract_patches(subject, lesions, config, ids=ids)
    if contrasts[-1] == "qsm":
        qsm = image_patches(subject.images["qsm"], lesions, size, ids=ids)
        patches[:, -2] = np.clip(0.5 + qsm / (2 * QSM_WINDOW_PPM), 0, 1)
    order = [contrasts[-1], *contrasts[:-1]]  # the susceptibility image first
    return patches[:, [config.channels.index(c) for c in order] + [-1]], (*order, "mask")


def gallery_channels(layouts: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The rows of a gallery of patches of these channel layouts: every susceptibility and
    structural contrast any has (susceptibility first, then :data:`STRUCTURAL` order), then
    ``"mask"``."""
    have = {c for layout in layouts for c in layout}
    return (*(c for c in (*SUSCEPTIBILITY, *STRUCTURAL) if c in have), "mask")


def patch_gallery(
    patches: np.ndarray,
    titles: Sequence[str],
    path: str | Path,
    *,
    channels: Sequence[str] = ("phase", "mp2rage"),
    suptitle: str | None = None,
    layout: Sequence[str] = PatchConfig().channels,
    labels: Mapping[str, str] = CONTRAST_LABELS,
) -> Path:
    """Save the central axial slice of each patch, one column per patch, one row per channel
    shown (``channels``, by name, each row labelled ``labels[channel]``; ``layout``: the
    patches' channels, :attr:`PatchConfig.channels`). Values are shown over [0, 1]; a channel
    that is NaN in a patch (a contrast its subject lacks) is left blank.

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
            image = patches[j, list(layout).index(channel), :, :, mid]
            if not np.isnan(image).all():
                ax.imshow(image.T, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
                ax.contour(outline.T, levels=[0.5], colors="tab:orange", linewidths=0.6, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=7)
            if j == 0:
                ax.set_ylabel(labels.get(channel, channel), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        return write_atomic(path, lambda fh: fig.savefig(fh, dpi=130, format=path.suffix[1:] or "png"),
                            binary=True)
    finally:
        plt.close(fig)
