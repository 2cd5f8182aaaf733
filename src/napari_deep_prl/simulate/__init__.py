"""A physics-based synthetic PRL cohort.

Public API:

* :func:`simulate_subject` ``(seed, params=None, *, index=0, **options) -> Simulated`` — one
  subject in memory: ``.subject`` (an :class:`~napari_deep_prl.io.Subject` with phase, mp2rage,
  binary mask, prl_mask, affine), ``.truth`` (per-lesion truth table, ids as
  :func:`~napari_deep_prl.lesions.label_lesions` assigns them) and ``.params``.
* :func:`sample_subject` ``(seed=0) -> Simulated`` — a small subject in about a second, for the
  napari sample data and quick demos.
* :func:`simulate_cohort` ``(out_dir, n_subjects, seed, **options)`` — a progress generator that
  writes ``sub-XXX/`` NIfTI files, ``manifest.csv``, ``lesions_truth.tsv`` and ``subjects.tsv``
  and returns the manifest path.
* :class:`SubjectParams`, :data:`KINDS`, :data:`PRL_KINDS`.

Phase convention: paramagnetic = dark (negative phase). See ``docs/simulator.md``.
"""

from napari_deep_prl.simulate.cohort import simulate_cohort
from napari_deep_prl.simulate.lesion_kinds import KINDS, PRL_KINDS
from napari_deep_prl.simulate.params import SubjectParams
from napari_deep_prl.simulate.subject import Simulated, sample_subject, simulate_subject

__all__ = ["KINDS", "PRL_KINDS", "Simulated", "SubjectParams", "sample_subject",
           "simulate_cohort", "simulate_subject"]
