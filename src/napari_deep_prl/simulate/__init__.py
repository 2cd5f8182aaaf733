"""A physics-based synthetic PRL cohort.

Public API:

* :func:`simulate_subject` ``(seed, params=None, *, index=0, contrasts=SIMULATED_CONTRASTS,
  **options) -> Simulated`` — one subject in memory: ``.subject`` (an
  :class:`~napari_deep_prl.data.images.Subject` with phase, mp2rage, binary mask, prl_mask, affine, and
  the display-only ``extra`` images: FLAIR-like, T2*-weighted magnitude), ``.truth``
  (per-lesion truth table, ids as :func:`~napari_deep_prl.data.masks.label_lesions` assigns them)
  and ``.params``.
* :func:`sample_subject` ``(seed=0) -> Simulated`` — a small subject in about a second, for the
  napari sample data and quick demos.
* :func:`simulate_clinical_subject` ``(seed, params=None, *, index=0, site=ClinicalSite(),
  contrasts=("t1w", "flair"), **options) -> ClinicalSimulated`` — the same subject as a clinical
  site scans it: ``.images`` (NIfTI images by manifest column, each on its own grid: a filtered
  phase or QSM on a tilted 0.6 x 0.6 x 2 mm slab, structural images and masks at 1 mm),
  ``.truth``, ``.params`` and ``.acquisition`` (the site's facts: phase sign, grids, tilt).
* :func:`simulate_cohort` ``(out_dir, n_subjects, seed, *, site="research", contrasts=None,
  **options)`` — a progress generator that writes ``sub-XXX/`` NIfTI files, ``manifest.csv``,
  ``lesions_truth.tsv`` and ``subjects.tsv`` and returns the manifest path; ``site="clinical"``
  (or a :class:`ClinicalSite`) writes a clinical site's scans.
* :class:`SubjectParams`, :class:`ClinicalSite`, :data:`KINDS`, :data:`PRL_KINDS`,
  :data:`SIMULATED_CONTRASTS`, :data:`SITES`.

Phase convention: paramagnetic = dark (negative phase), unless a clinical site is asked for the
other sign. See ``docs/simulator.md``.
"""

from napari_deep_prl.simulate.clinical import (
           SITES,
           ClinicalSimulated,
           ClinicalSite,
           simulate_clinical_subject,
)
from napari_deep_prl.simulate.cohort import simulate_cohort
from napari_deep_prl.simulate.lesion_kinds import KINDS, PRL_KINDS
from napari_deep_prl.simulate.params import SubjectParams
from napari_deep_prl.simulate.subject import (
           SIMULATED_CONTRASTS,
           Simulated,
           sample_subject,
           simulate_subject,
)

__all__ = ["KINDS", "PRL_KINDS", "SIMULATED_CONTRASTS", "SITES", "ClinicalSimulated", "ClinicalSite", "Simulated",
           "SubjectParams", "sample_subject", "simulate_clinical_subject", "simulate_cohort", "simulate_subject"]
