"""The contrasts a subject's images are named by, in manifests, BIDS discovery and the simulator.

A subject has one *susceptibility* image — ``phase`` (unwrapped or high-pass filtered phase,
paramagnetic dark by the project's convention) or ``qsm`` (susceptibility in ppm, paramagnetic
bright by definition) — and one or more *structural* images; *display-only* images are shown in
the review and never enter a model.
"""

from __future__ import annotations

#: The susceptibility image of a subject: one of these.
SUSCEPTIBILITY = ("phase", "qsm")
#: Structural images, in manifest order.
STRUCTURAL = ("mp2rage", "t1w", "flair")
#: Images shown in the review only (an SWI's magnitude, the SWI itself).
DISPLAY_ONLY = ("magnitude", "swi")
