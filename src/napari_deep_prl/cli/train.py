"""``deep-prl train``: train Deep-PRL on a labelled cohort and save a checkpoint."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, write_or_rescue, write_table
from napari_deep_prl.cli._subjects import MANIFEST_HELP, add_bids_arguments, cohort_from_args
from napari_deep_prl.cli._threads import add_threads_argument, set_threads
from napari_deep_prl.data.contrasts import cohort_contrasts, model_contrasts
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.patches import MAX_PATCH_SIZE, PatchConfig
from napari_deep_prl.model.augment import AugmentConfig
from napari_deep_prl.model.checkpoint import Checkpoint, load_models, save_ensemble
from napari_deep_prl.model.comparison import Comparison, compare_with_start
from napari_deep_prl.model.crossfit import (
    DEFAULT_MODELS,
    EnsembleResult,
    history_table,
    train_crossfitted,
)
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.inference import PRECISIONS, resolve_device
from napari_deep_prl.model.metrics import THRESHOLD_RULES
from napari_deep_prl.model.network import FUSIONS, PRESETS, ModelConfig, model_config
from napari_deep_prl.model.train import (
    BATCH_SIZE,
    MAX_AUTO_BATCH,
    STACK_CHOICES,
    TrainConfig,
    TrainResult,
    auto_batch_size,
    stacks,
    train,
)


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl train``."""
    p.description = ("Train the Deep-PRL network on every labelled lesion of a cohort (manifest "
                     "with a prl_mask or prl_labels column): Adam, polynomial LR decay, class-balanced batches, "
                     "augmentation, focal loss; a patient-level validation split picks the decision "
                     "threshold (and, with --keep best, the epoch). Ctrl-C stops after the current step and "
                     "still saves the best model so far. Writes MODEL.pt and MODEL_history.tsv. By default "
                     f"{DEFAULT_MODELS} networks are cross-fitted (each validated on different patients, the "
                     "threshold chosen on all of them) and saved together in MODEL.pt; scoring "
                     "averages them. --models 1 trains one network (a third of the time).")
    d = TrainConfig()
    p.add_argument("manifest", metavar="MANIFEST",
                   help=f"{MANIFEST_HELP}; its subjects need ground truth (prl_mask or prl_labels)")
    add_bids_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs ({d.epochs}, as the paper)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of split, weights, batches ({d.seed})")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="arithmetic of the training steps: auto (default) is bfloat16 where the CPU or GPU "
                        "computes it natively (about 1.5x faster on such a CPU), else float32")
    fixed = "; with --init the model's, and another value is refused"
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help=f"network width: default (CPU-sized, the default) or paper (GPU){fixed}")
    p.add_argument("--fusion", choices=FUSIONS,
                   help=f"mask attention: concat (paper, the default), none (ablation), gate{fixed}")
    p.add_argument("--normalisation", choices=("subject", "patch"),
                   help=f"patch intensity scaling: per subject (default) or per patch (paper's min-max){fixed}")
    p.add_argument("--phase-centre", choices=("local", "zero"),
                   help="phase mapped to the middle of the scale: the median of each patch's own tissue "
                        "(local, default: offsets and slow background fields left by phase filtering "
                        f"cancel) or phase 0 (zero: for phase images known to be centred on 0){fixed}")
    p.add_argument("--contrasts", metavar="NAMES",
                   help="the image contrasts the network takes, comma-separated: one susceptibility (phase or qsm) "
                        "and one or more structural (mp2rage, t1w, flair), e.g. t1w,flair,phase (default: those "
                        "every subject has; MP2RAGE and phase alone when every subject has both, the paper's "
                        f"network){fixed}")
    p.add_argument("--patch-size", type=int, metavar="VOXELS",
                   help=f"patch side in voxels ({PatchConfig.size}; at most {MAX_PATCH_SIZE}){fixed}")
    p.add_argument("--batch-size", type=_batch_size, default=d.batch_size, metavar="N|auto",
                   help=f"patches per step and network ({d.batch_size}, the paper's); auto: {d.batch_size} on a CPU, "
                        f"on a GPU the largest power of two up to {MAX_AUTO_BATCH} that fits in half its free memory. "
                        "The learning rate is per step and not scaled: a larger batch takes fewer steps per epoch")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr:g})")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch, metavar="N",
                   help=f"class-balanced samples per epoch ({d.samples_per_epoch})")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"fraction of patients held out to validate a single network ({d.val_fraction}; an "
                        "ensemble validates each network on a different K-th)")
    p.add_argument("--keep", default=d.keep, choices=("last", "best"),
                   help="model kept: the last epoch's (default; small validation sets make the best-F1 epoch "
                        "a noisy pick) or the best validation F1 (the paper's rule)")
    p.add_argument("--threshold-rule", default=d.threshold_rule, choices=tuple(THRESHOLD_RULES),
                   help="decision rule chosen on validation: calibrated (default: the model's probability is "
                        "Platt-calibrated on its validation patients and cut at half the best F1; steadier, and "
                        "models average on one scale) or best_f1 (raw probability, the paper's F1 argmax)")
    p.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    p.add_argument("--no-tta", action="store_true",
                   help="choose the threshold on one-view validation predictions (scoring then uses one view "
                        "by default: 8x faster, less accurate) instead of the 8-flip average")
    p.add_argument("--exclude-confluent", action="store_true", help="leave confluent lesions out (as the paper)")
    p.add_argument("--flip-phase", action="store_true", help="negate the phase (when paramagnetic is bright)")
    p.add_argument("--stack", default=d.stack, choices=STACK_CHOICES,
                   help="train the ensemble's networks stacked, in one forward and backward pass per step, each as "
                        "it would train alone: auto (default) on a GPU only, on, off (one after another)")
    add_threads_argument(p)
    p.add_argument("--models", type=int, metavar="K",
                   help=f"networks in the cross-fitted ensemble ({DEFAULT_MODELS}, or as many as --init holds; "
                        "each costs one training): a better F1 and ranking than one network, and a threshold "
                        "chosen on every patient (see docs/model.md); 1 trains a single network")
    p.add_argument("--init", metavar="MODEL.pt",
                   help="fine-tune this checkpoint instead of starting afresh (an ensemble member by member), "
                        "keeping its network and patch settings; the result is compared with it on the same "
                        "validation lesions, and exits with status 1 when it validates worse (it is saved either "
                        "way)")
    add_accept_worse(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    init = load_models(args.init) if args.init else []
    models = network_count(args.models, init, args.init)
    output = Path(args.output)
    for path in (output, _history_path(output), *([_out_of_fold_path(output)] if models > 1 else [])):
        check_output(path)  # before hours of training, not after
    set_threads(args.threads)
    cohort = cohort_from_args(args.manifest, args)
    patch_config, network = network_settings(args, init, args.init, cohort)
    config = TrainConfig(
        epochs=args.epochs, batch_size=BATCH_SIZE if args.batch_size == "auto" else args.batch_size, lr=args.lr,
        stack=args.stack, samples_per_epoch=args.samples_per_epoch,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, tta=not args.no_tta, keep=args.keep,
        precision=args.precision, threshold_rule=args.threshold_rule, model=network,
        augment=replace(AugmentConfig(), p=0.0) if args.no_augment else AugmentConfig(),
    )
    if not args.quiet:
        print(f"training on {', '.join(patch_config.contrasts)} (patch channels: {', '.join(patch_config.channels)})",
              file=sys.stderr)
    patches = run_with_tqdm(build_patchset(cohort, patch_config, exclude_confluent=args.exclude_confluent,
                                           flip_phase=args.flip_phase), desc="patches", disable=args.quiet)
    if args.batch_size == "auto":
        together = models if models > 1 and stacks(config, resolve_device(config.device)) else 1
        config = replace(config, batch_size=auto_batch_size(config, patches.config, together))
        if not args.quiet:
            print(f"batch size {config.batch_size} (auto)", file=sys.stderr)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, _stop_on_first_interrupt(stop))
    try:
        if models > 1:
            ensemble = run_with_tqdm(train_crossfitted(patches, config, models, init=init, stop=stop),
                                     disable=args.quiet)
            path, checkpoints, validation = (_save_ensemble(ensemble, output), ensemble.checkpoints,
                                             ensemble.validation)
        else:
            result = run_with_tqdm(train(patches, config, init=init[0] if init else None, stop=stop),
                                   disable=args.quiet)
            path, checkpoints, validation = (_save_single(result, output), [result.checkpoint],
                                             result.checkpoint.validation)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not init:
        return 0
    return report_comparison(compare_with_start(init, checkpoints, validation, patches, config), path,
                             args.init, args.accept_worse)


def add_accept_worse(parser: argparse.ArgumentParser) -> None:
    """The ``--accept-worse`` flag of the commands that fine-tune a model."""
    parser.add_argument("--accept-worse", action="store_true",
                        help="exit with status 0 even when the fine-tuned model validates worse than the model "
                             "it started from (lower F1, or equal F1 and lower ROC AUC, on the same validation "
                             "lesions); without it that exits with status 1. The new model is saved either way")


def report_comparison(comparison: Comparison, path: Path, start: str, accept_worse: bool) -> int:
    """Print how the fine-tuned model validates against its start; 1 when worse and not accepted."""
    print(f"compared with {start} {comparison.summary()}", file=sys.stderr)
    if not comparison.worse:
        return 0
    if accept_worse:
        print(f"accepted (--accept-worse): {path} validates worse than {start}", file=sys.stderr)
        return 0
    print(f"{path} validates worse than {start}: it is saved, but keep using {start} (exit status 1); "
          "to take the new model anyway, use its file (and --accept-worse in scripts)", file=sys.stderr)
    return 1


def network_settings(args: argparse.Namespace, init: list[Checkpoint], init_path: str | None,
                     cohort: Sequence[SubjectPaths]) -> tuple[PatchConfig, ModelConfig]:
    """The patch settings and network to train: the flags' (defaults where left out; the
    contrasts: the cohort's, :func:`~napari_deep_prl.data.contrasts.cohort_contrasts`); when
    fine-tuning, the starting model's, and a flag given with another value is refused, naming
    both: a fine-tuned network keeps its architecture and the patches it learnt from."""
    contrasts = model_contrasts(args.contrasts.split(","), "--contrasts") if args.contrasts else None
    if not init and contrasts is None:
        contrasts = cohort_contrasts(((p.subject, (c for c, _ in p.images)) for p in cohort), args.manifest)
    patch = PatchConfig(**{k: v for k, v in (("size", args.patch_size), ("normalisation", args.normalisation),
                                             ("phase_centre", args.phase_centre), ("contrasts", contrasts))
                           if v is not None})
    network = model_config(args.preset or "default", **({"fusion": args.fusion} if args.fusion else {}))
    if not init:
        return patch, network
    start = init[0]
    own = start.model_config
    given = [("--patch-size", args.patch_size, start.patch_config.size),
             ("--normalisation", args.normalisation, start.patch_config.normalisation),
             ("--phase-centre", args.phase_centre, start.patch_config.phase_centre),
             ("--contrasts", contrasts and ",".join(contrasts), ",".join(start.contrasts)),
             ("--fusion", args.fusion, own.fusion),
             ("--preset", args.preset,
              next((name for name, preset in PRESETS.items()
                    if replace(preset, fusion=own.fusion, dropout=own.dropout) == own),
                   f"none (widths {list(own.widths)})"))]
    conflicts = [f"{flag} {value} (the model's: {theirs})" for flag, value, theirs in given
                 if value is not None and value != theirs]
    if conflicts:
        raise InputError(f"{'; '.join(conflicts)}: {init_path} fixes these, and fine-tuning keeps them. Leave "
                         "the flags out to fine-tune it, or train a new model without --init to change them")
    return start.patch_config, own


def _batch_size(value: str) -> int | str:
    """``--batch-size``: a positive number of patches, or ``auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number of patches nor 'auto'") from None


def network_count(requested: int | None, init: list[Checkpoint], init_path: str | None) -> int:
    """``--models`` resolved: as given, else as many networks as the model to fine-tune, else
    :data:`DEFAULT_MODELS`."""
    models = requested if requested is not None else len(init) or DEFAULT_MODELS
    if models < 1:
        raise InputError(f"--models {models}: give 1 (one network) or more (a cross-fitted ensemble)")
    if init and models != len(init):
        raise InputError(f"--models {models}: {init_path} holds {len(init)} network(s) and fine-tuning "
                         f"keeps them; leave --models out (or give {len(init)})")
    return models


def _save_single(result: TrainResult, output: Path) -> Path:
    def save(folder: Path) -> tuple[Path, Path]:
        path = result.checkpoint.save(folder / output.name)
        return path, write_table(pd.DataFrame(result.history), _history_path(path))

    path, history = write_or_rescue(save, output.parent, "the trained model (and its history)")
    kept = result.checkpoint.validation
    print(f"{'stopped; ' if result.stopped else ''}kept epoch {result.kept_epoch}: validation F1 "
          f"{kept['val_f1']:.3f}, ROC AUC {kept['val_auc']:.3f}, threshold {kept['threshold']:.3f}"
          f"{' (8-flip TTA)' if result.checkpoint.tta else ''}; "
          f"model {path} (id {result.checkpoint.id}), history {history}", file=sys.stderr)
    return path


def _save_ensemble(result: EnsembleResult, output: Path) -> Path:
    def save(folder: Path) -> tuple[Path, Path]:
        path = save_ensemble(result.checkpoints, folder / output.name)
        write_table(result.out_of_fold, _out_of_fold_path(path))
        return path, write_table(history_table(result.runs), _history_path(path))

    path, history = write_or_rescue(save, output.parent,
                                    "the trained models (and their history and out-of-fold predictions)")
    oof = result.validation
    print(f"{'stopped; ' if result.stopped else ''}{len(result.checkpoints)} cross-fitted models; out-of-fold "
          f"({oof['lesions']} lesions, {oof['prl_lesions']} PRL): F1 {oof['val_f1']:.3f}, ROC AUC "
          f"{oof['val_auc']:.3f}, threshold {result.threshold:.3f}; model {path}, history {history}",
          file=sys.stderr)
    return path


def _history_path(model: Path) -> Path:
    return model.with_name(model.stem + "_history.tsv")


def _out_of_fold_path(model: Path) -> Path:
    return model.with_name(model.stem + "_out_of_fold.tsv")


def _stop_on_first_interrupt(stop: threading.Event) -> Callable[[int, object], None]:
    """SIGINT handler: the first Ctrl-C asks training to stop cleanly, the second interrupts."""
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)
        stop.set()

    return handler
