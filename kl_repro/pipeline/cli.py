"""Command line: ``kl-repro <command> ...`` (``kl-repro --help`` lists the commands).

Each command is a small function ``cmd_<name>(args) -> int`` plus its argument declarations in
:func:`build_parser`.  Errors in user input (:class:`~kl_repro.core.config.ConfigError`) print one clear
line and exit with status 2, before any computation.
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kl_repro.core import store
from kl_repro.core.store import LockBusy
from kl_repro.core.config import ConfigError
from kl_repro.core.plotting import image_grid, to_uint8_hwc
from kl_repro.core.profiles import DEFAULT_PROFILE, PROFILES, Profile, load_profile
from kl_repro.evaluation.evaluate import EvalConfig, default_extractor
from kl_repro.evaluation.reference import ReferenceConfig, reference_stats
from kl_repro.paper_a.evaluate import evaluate_run
from kl_repro.paper_a.training.loop import train
from kl_repro.paper_a.training.config import load_run_config
from kl_repro.paper_a.training.run import Run, runs_dir as profile_runs_dir
from kl_repro.pipeline.book import build_book
from kl_repro.pipeline.notebooks import repo_root
from kl_repro.pipeline.plan import format_plan
from kl_repro.pipeline.reproduce import reproduce
from kl_repro.pipeline.scheduler import pending_runs, slurm_script, worker, worker_commands

__all__ = ["main", "build_parser"]


def cmd_profiles(args: argparse.Namespace) -> int:
    """List the profiles and what each is for."""
    for name in PROFILES:
        print(f"{name:6s}  {load_profile(name).description}")
    return 0


def _terminate_as_interrupt() -> None:
    """SIGTERM (``kill``) unwinds like Ctrl-C, so worker processes are stopped and finished work kept."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Train the profile's runs, execute every notebook, build the book (``make reproduce``)."""
    _terminate_as_interrupt()
    try:
        return reproduce(args.profile, build_root=Path(args.build_root) if args.build_root else None,
                         train=not args.no_train)
    except LockBusy as e:
        print(f"kl-repro reproduce: {e}", file=sys.stderr)
        return 3


def cmd_book(args: argparse.Namespace) -> int:
    """Rebuild the HTML book from the stored results of a profile (no execution)."""
    root = repo_root()
    index = build_book(args.profile, Path(args.build_root) if args.build_root else root, root, force=args.force)
    print(f"book: {index}")
    return 0


def cmd_fid(args: argparse.Namespace) -> int:
    """Sample quality of a trained run: FID (or FD_clf for digits), KID, IS where available; stored in the run folder."""
    cfg = EvalConfig(num_samples=args.num_samples, extractor=args.extractor, ref_images=args.ref_images,
                     seed=args.seed, batch_size=args.batch_size, device=args.device)
    print(evaluate_run(args.run_dir, cfg=cfg, progress=True, force=args.force))
    return 0


def cmd_fid_ref(args: argparse.Namespace) -> int:
    """Compute (or find cached) the reference statistics of a data set's real images."""
    ref = ReferenceConfig(dataset=args.dataset, split=args.split, resolution=args.resolution,
                          num_images=args.num_images, root=args.root)
    extractor = args.extractor or default_extractor(ref.dataset)
    stats = reference_stats(ref, extractor, batch_size=args.batch_size, device=args.device, progress=True)
    print(f"{stats.description}; {stats.features.shape[1]}-d features of {extractor}\n{stats.path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume, or reuse) one run of paper A from a config file and ``--set`` overrides."""
    runs_dir = Path(args.runs_dir) if args.runs_dir else profile_runs_dir(args.profile)
    cfg = load_run_config(args.config, args.set or [], runs_dir=runs_dir)
    try:
        run = train(cfg, runs_dir, progress=not args.quiet)
    except LockBusy as e:
        print(f"kl-repro train: {e}", file=sys.stderr)
        return 3
    rows = run.metrics("train")
    last = f"; last loss {rows[-1]['loss']:.4f} at step {rows[-1]['step']}" if rows else ""
    print(f"run: {run.dir} (finished){last}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """DDIM samples of a trained run's EMA model, written as .png (grid), .npz (uint8 NHWC) or .pt (float)."""
    run = Run.open(args.run_dir)
    sampler = run.config.sampler.replace(**{k: v for k, v in (("eta", args.eta), ("S", args.steps)) if v is not None})
    out = Path(args.out)
    if out.suffix not in (".png", ".npz", ".pt"):
        raise ConfigError(f"--out must end in .png, .npz or .pt, got {out.name!r}")
    x = run.sample(args.n, seed=args.seed, batch_size=args.batch_size, device=args.device, sampler=sampler)
    if out.suffix == ".pt":
        store.atomic_torch_save(x, out)
    elif out.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, to_uint8_hwc(x))
        store.atomic_write_bytes(out, buf.getvalue())
    else:
        g = image_grid(x)
        buf = io.BytesIO()
        Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).save(buf, format="PNG")
        store.atomic_write_bytes(out, buf.getvalue())
    print(f"{args.n} samples of {run.name} (DDIM eta={sampler.eta:g}, S={sampler.S}, seed {args.seed}) -> {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print a profile's paper-A runs: status, training and evaluation time left, the total and the source of each estimate.

    Estimates come from a run's own measured steps, ``make gpu-check``'s measurement, the profile's cost
    model or its ``est_s_per_step`` (``pipeline.plan``).  ``--format commands``: one self-contained
    ``kl-repro worker`` command per pending run; ``--format slurm``: a script submitting them as SLURM job
    arrays (``pipeline.scheduler``; README, "On a cluster").
    """
    if args.format != "table":
        runs = pending_runs(args.profile, args.only or ())
        print((worker_commands if args.format == "commands" else slurm_script)(args.profile, runs), end="")
        return 0
    print(format_plan(args.profile))
    return 0


def _profile(name: str) -> Profile:
    """argparse type: the profile is resolved once, here, and passed down as an object."""
    try:
        return load_profile(name)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_profile(s: argparse.ArgumentParser, what: str = "") -> None:
    s.add_argument("--profile", type=_profile, default=DEFAULT_PROFILE,
                   help=f"{' | '.join(PROFILES)} (default {DEFAULT_PROFILE}){what}")


def _train_and_sample_commands(sub) -> None:
    s = sub.add_parser("train", help="train one run of paper A (resumes an interrupted run, reuses a finished one)",
                       description="The run is named by its config. Multi-GPU: accelerate launch -m kl_repro.pipeline.cli train ...")
    s.add_argument("--config", help="TOML/JSON file with sections [data] [net] [diffusion] [train] [sampler]")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.steps=1000 (repeatable)")
    _add_profile(s, "; results go to <results>/<profile>/runs")
    s.add_argument("--runs-dir", help="folder of runs (overrides --profile)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="DDIM samples of a trained run's EMA model")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds config.json and checkpoints/)")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed; image i uses (seed, i) (default 0)")
    s.add_argument("--batch-size", type=int, default=64, help="images per sampler batch (default 64)")
    s.add_argument("--eta", type=float, help="DDIM eta (default: the run's, 1.0)")
    s.add_argument("--steps", type=int, help="DDIM steps S (default: the run's, 20)")
    s.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    s.add_argument("--out", required=True, help="output file: .png (grid), .npz (uint8 NHWC) or .pt (float tensor)")
    s.set_defaults(func=cmd_sample)


def _pipeline_commands(sub) -> None:
    s = sub.add_parser("reproduce", help="train, execute every notebook and build the book for a profile",
                       description="Idempotent and resumable: finished runs and executed notebooks are reused.")
    _add_profile(s)
    s.add_argument("--build-root", help="folder that receives book/ (default: the repository)")
    s.add_argument("--no-train", action="store_true", help="skip the training stage (notebooks reuse stored runs)")
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("plan", help="list a profile's training runs, their status and the time they need, with its sources")
    _add_profile(s)
    s.add_argument("--format", choices=("table", "commands", "slurm"), default="table",
                   help="table (default); commands: one shell command per pending run, for any cluster scheduler; "
                   "slurm: a script that submits them as SLURM job arrays")
    s.add_argument("--only", action="append", metavar="GLOB",
                   help="commands/slurm: only the pending runs whose key matches, e.g. 'digits/*' (repeatable)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("worker", help="train and evaluate one planned run (RUN from `kl-repro plan`)",
                       description="The same work `make reproduce` gives a worker process. Multi-GPU, one run: "
                       "torchrun --nproc_per_node 8 -m kl_repro.pipeline.cli worker --profile paper --key mnist/kl8-b16@s0 "
                       "(the option is --key, not --run: torchrun would read --run as its own --run-path)")
    _add_profile(s)
    s.add_argument("--key", "--run", dest="run", required=True, metavar="KEY", help="a run key, e.g. digits/kl8-b16@s0")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("book", help="rebuild the HTML book from stored results (no execution)")
    _add_profile(s)
    s.add_argument("--build-root", help="folder that receives book/ (default: the repository)")
    s.add_argument("--force", action="store_true", help="build the HTML even if its sources are unchanged since the last build")
    s.set_defaults(func=cmd_book)


def _metric_commands(sub) -> None:
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


def cmd_worker(args: argparse.Namespace) -> int:
    """Train one planned run of the profile's matrix and evaluate it (one process; under ``accelerate launch``, one run on several GPUs)."""
    return worker(args.profile, args.run)


def build_parser() -> argparse.ArgumentParser:
    """The one command line of the project: every command and its arguments."""
    p = argparse.ArgumentParser(
        prog="kl-repro",
        description="Reproduce paper A (truncated-KL diffusion training) and paper B (Fokker-Planck "
        "eigenfunction sampler): train, sample, evaluate, and build the book.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser("profiles", help="list the reproduction profiles")
    s.set_defaults(func=cmd_profiles)
    _train_and_sample_commands(sub)
    _pipeline_commands(sub)
    _metric_commands(sub)
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
