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
