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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kl-repro",
        description="Reproduce paper A (truncated-KL diffusion training) and paper B (Fokker-Planck "
        "eigenfunction sampler): train, sample, evaluate, and build the book.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("profiles", help="list the reproduction profiles")
    s.set_defaults(func=cmd_profiles)

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
