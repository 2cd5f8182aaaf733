"""``--threads N``: how many CPU threads a command's numerical work may use."""

from __future__ import annotations

import argparse

from napari_deep_prl.base.errors import InputError


def add_threads_argument(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Add ``--threads`` (or ``flags``, e.g. a BIDS App's ``--nthreads``) to ``parser``."""
    parser.add_argument(*(flags or ("--threads",)), type=int, metavar="N", dest="threads",
                        help="CPU threads of PyTorch and of the BLAS/OpenMP libraries (default: one per core; "
                             "on a cluster the task's cores, e.g. $SLURM_CPUS_PER_TASK; on a busy shared "
                             "machine 1 is often faster)")


def set_threads(threads: int | None) -> None:
    """Limit torch's and the BLAS libraries' CPU threads to ``threads`` (``None``: leave them).

    Their threads spin badly when cores are oversubscribed, as when several tasks share a node
    and each library starts one thread per core of the node."""
    if threads is None:
        return
    if threads < 1:
        raise InputError(f"--threads {threads}: give 1 or more")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
