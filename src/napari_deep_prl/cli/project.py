"""``deep-prl project``: create a project folder (cohort, lesions, rating store)."""

from __future__ import annotations

import argparse
import sys

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.cli._subjects import MANIFEST_HELP, add_bids_arguments, cohort_from_args
from napari_deep_prl.ratings.project import CONFIG_NAME, create_project


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl project``."""
    p.description = ("A project folder holds a reference to the cohort manifest, "
                     "the rating database, models and exports.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="create a project and register every subject's lesions",
        description=f"Create DIR with {CONFIG_NAME} (edit it for the consensus rule, exclusion "
                    "reasons, blinding and study design), ratings.sqlite (or the store on a "
                    "PostgreSQL server, --store), models/ and exports/, and register the "
                    "lesions of every subject of the manifest.")
    init.add_argument("dir", help="project folder to create")
    init.add_argument("--manifest", required=True,
                      help=f"{MANIFEST_HELP} (a BIDS dataset's subjects found are written to DIR/manifest.csv, "
                           "which the project then reads)")
    add_bids_arguments(init)
    init.add_argument("--consensus", choices=("unanimous", "majority"), default="unanimous",
                      help="automatic consensus rule (default: unanimous)")
    init.add_argument("--min-raters", type=int, default=2,
                      help="ratings a lesion needs before automatic consensus (default: 2)")
    init.add_argument("--store", metavar="URL",
                      help="keep the ratings on a PostgreSQL server, for raters at several sites: "
                           "postgresql://[USER@]HOST[:PORT]/DATABASE, without password (PostgreSQL "
                           "finds it in ~/.pgpass, a service file or PGPASSWORD); default: "
                           "ratings.sqlite in DIR")
    init.add_argument("--image-root", metavar="SITE=DIR", action="append",
                      help="where SITE keeps its copy of the images (repeat per site): the "
                           "manifest is then found relative to this machine's site's DIR "
                           "(DEEP_PRL_SITE, else the hostname); see docs/multisite.md")
    init.add_argument("--quiet", action="store_true", help="no progress bar")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    config = {"consensus": {"method": args.consensus, "min_raters": args.min_raters}}
    if args.store is not None:
        config["store"] = args.store
    if args.image_root:
        bad = [given for given in args.image_root if not all(given.partition("=")[::2])]
        if bad:
            raise InputError(f"--image-root {bad[0]!r} must read SITE=DIR, e.g. "
                             "site-a=/data/prl.")
        config["image_roots"] = dict(given.split("=", 1) for given in args.image_root)
    project = run_with_tqdm(create_project(args.dir, cohort_from_args(args.manifest, args), config),
                            desc="registering lesions", disable=args.quiet)
    with project:
        lesions = project.lesions()
    print(f"project {args.dir}: {lesions['subject'].nunique()} subjects, {len(lesions)} lesions",
          file=sys.stderr)
    return 0
