"""``deep-prl export``: a trained model's whole scoring head as one ONNX graph, for use elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_deep_prl.base.tables import check_output
from napari_deep_prl.cli._threads import add_threads_argument, set_threads
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.model.export import export_onnx
from napari_deep_prl.model.onnx_model import first_views_file, vectors_file


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl export``."""
    p.description = ("Write the model's scoring head — every network of the ensemble, the axis flips it is scored "
                     "on, each network's calibration and the average — as one ONNX graph taking a batch of "
                     "normalised patches (N x C x D x H x W) and giving the PRL probability and the per-view "
                     "probabilities. The patch settings, channels, threshold and model ids are in the graph's "
                     "metadata; beside it go the first-view graph that screens lesions when scoring (MODEL.first.onnx, "
                     "for models scored on several views) and test vectors (MODEL.test.npz). Needs the onnx extra: "
                     "pip install 'napari-deep-prl[onnx]'. Score it with `deep-prl score --model MODEL.onnx`.")
    p.add_argument("model", nargs="+", metavar="MODEL.pt",
                   help="checkpoint(s) of the model; several are exported as one ensemble")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    output = Path(args.output)
    for path in (output, first_views_file(output), vectors_file(output)):
        check_output(path)
    checkpoints = load_models(*args.model)
    files = export_onnx(checkpoints, output)
    first = "" if files.first_views is None else f"; first-view graph {files.first_views}"
    print(f"{len(checkpoints)} network(s) ({', '.join(c.id for c in checkpoints)}) exported to {files.graph}"
          f"{first}; test vectors {files.vectors}", file=sys.stderr)
    return 0
