"""Command line: ``kl-repro <command> ...`` (``kl-repro --help`` lists the commands).

Each command is a small function ``cmd_<name>(args) -> int`` plus its argument declarations in
:func:`build_parser`.  Errors in user input (:class:`~kl_repro.config.ConfigError`) print one clear
line and exit with status 2, before any computation.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError

__all__ = ["main", "build_parser"]


def cmd_profiles(args: argparse.Namespace) -> int:
    """List the profiles and what each is for."""
    from .profiles import PROFILES, load_profile

    for name in PROFILES:
        print(f"{name:6s}  {load_profile(name)['description']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Train the profile's runs, execute every notebook, build the book (``make reproduce``)."""
    from pathlib import Path

    from .profiles import check_profile_name
    from .reproduce import reproduce
    from .store import LockBusy

    check_profile_name(args.profile)
    try:
        return reproduce(args.profile, build_root=Path(args.build_root) if args.build_root else None,
                         train=not args.no_train)
    except LockBusy as e:
        print(f"kl-repro reproduce: {e}", file=sys.stderr)
        return 3


def cmd_book(args: argparse.Namespace) -> int:
    """Rebuild the HTML book from the stored results of a profile (no execution)."""
    from pathlib import Path

    from .profiles import check_profile_name
    from .reproduce import build_book, repo_root

    check_profile_name(args.profile)
    root = repo_root()
    index = build_book(args.profile, Path(args.build_root) if args.build_root else root, root)
    print(f"book: {index}")
    return 0


def cmd_fid(args: argparse.Namespace) -> int:
    """Sample quality of a trained run: FID (or FD_clf for digits), KID, IS where available; stored in the run folder."""
    from .metrics import EvalConfig, evaluate_run

    cfg = EvalConfig(num_samples=args.num_samples, extractor=args.extractor, ref_images=args.ref_images,
                     seed=args.seed, batch_size=args.batch_size, device=args.device)
    print(evaluate_run(args.run_dir, cfg=cfg, progress=True, force=args.force))
    return 0


def cmd_fid_ref(args: argparse.Namespace) -> int:
    """Compute (or find cached) the reference statistics of a data set's real images."""
    from .metrics import ReferenceConfig, default_extractor, reference_stats

    ref = ReferenceConfig(dataset=args.dataset, split=args.split, resolution=args.resolution,
                          num_images=args.num_images, root=args.root)
    extractor = args.extractor or default_extractor(ref.dataset)
    stats = reference_stats(ref, extractor, batch_size=args.batch_size, device=args.device, progress=True)
    print(f"{stats.description}; {stats.features.shape[1]}-d features of {extractor}\n{stats.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kl-repro",
        description="Reproduce paper A (truncated-KL diffusion training) and paper B (Fokker-Planck "
        "eigenfunction sampler): train, sample, evaluate, and build the book.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("profiles", help="list the reproduction profiles")
    s.set_defaults(func=cmd_profiles)

    s = sub.add_parser("reproduce", help="train, execute every notebook and build the book for a profile",
                       description="Idempotent and resumable: finished runs and executed notebooks are reused.")
    s.add_argument("--profile", default="cpu", help="smoke | cpu (default) | mnist | paper")
    s.add_argument("--build-root", help="folder that receives book/ (default: the repository)")
    s.add_argument("--no-train", action="store_true", help="skip the training stage (notebooks reuse stored runs)")
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("book", help="rebuild the HTML book from stored results (no execution)")
    s.add_argument("--profile", default="cpu", help="smoke | cpu (default) | mnist | paper")
    s.add_argument("--build-root", help="folder that receives book/ (default: the repository)")
    s.set_defaults(func=cmd_book)

    s = sub.add_parser("fid", help="FID / FD_clf (+ KID, IS) of a trained run's EMA model, stored in RUN_DIR/eval/",
                       description="Samples with the run's DDIM settings (per-image seeds) and compares with the cached "
                       "statistics of the first --ref-images training images. Default extractor: clf for digits, "
                       "inception-v3-compat otherwise.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds config.json and checkpoints/)")
    s.add_argument("--num-samples", type=int, default=50_000, help="generated images (default 50000, the papers')")
    s.add_argument("--extractor", help="inception-v3-compat | clf | tiny (default: by data set)")
    s.add_argument("--ref-images", type=int, help="first N real training images (default: the whole split)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.add_argument("--batch-size", type=int, default=100, help="images per sampler/extractor call (default 100)")
    s.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    s.add_argument("--force", action="store_true", help="recompute even if a stored result matches")
    s.set_defaults(func=cmd_fid)

    s = sub.add_parser("fid-ref", help="reference statistics of a data set's real images (cached by content)",
                       description="The first --num-images images of --split, unaugmented, in file order.")
    s.add_argument("dataset", metavar="DATASET", help="digits | mnist | cifar10 | celebahq")
    s.add_argument("--split", default="train", help="train (default) | test | all")
    s.add_argument("--num-images", type=int, help="first N images (default: the whole split)")
    s.add_argument("--resolution", type=int, help="image size (default: the data set's)")
    s.add_argument("--root", help="data folder (default: $KL_REPRO_DATA or ./data)")
    s.add_argument("--extractor", help="inception-v3-compat | clf | tiny (default: clf for digits, else inception)")
    s.add_argument("--batch-size", type=int, default=100, help="images per extractor call (default 100)")
    s.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    s.set_defaults(func=cmd_fid_ref)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"kl-repro {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kl-repro {args.command}: interrupted; finished work is kept, run the command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
