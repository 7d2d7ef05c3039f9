"""A prepared GPU check (``make gpu-check``, ``python -m bench.gpu_check``): the GPU paths of the project, one JSON summary.

On CUDA (a few minutes on one GPU; under 8):

1. ``train_steps``: for every model of paper A's Table 2 (Baseline-b16, KL-10d1-b16, KL-10d4-b16, KL-8d, KL-10d,
   at B = 16) and KL*-8d-b16 (Sec. 6.5), optimiser steps of the paper's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))``
   at CIFAR10-32 size in fp16 AMP with TF32 on (``bench.bench_train.TrainStep``, the training loop's step):
   finite loss, median step time, peak memory and FLOP rate, beside Table 2's VRAM and time per step, and the
   step-time ratios to the baseline beside Table 2's.
2. ``ddim``: DDIM batches (eta = 1, S = 20; Paper A, eqs. (23)-(24)) of the baseline and KL-8d networks, in
   the 100-image batches of the evaluation hook.
3. ``fid``: a 1,000-sample FID (``kl_repro.evaluation``, Inception) of baseline samples against 1,000 real
   CIFAR-10 training images when ``$KL_REPRO_DATA`` holds them, else against 1,000 random images (it says which).
4. ``two_process``: with two or more GPUs, a short training run in two processes (``torchrun``).
5. ``score_nets``: one forward of each of paper B's deep networks, where ``kl_repro.paper_b.score_nets`` exists.
6. ``cost_model``: the measured costs per network row, per DDIM row and per Inception image; the summary is
   written to ``<results>/gpu_check.json``, and ``kl-repro plan`` then prices GPU profiles with them.

Without CUDA it says so (``not_checked``: "not checked without CUDA: ...", one entry per GPU-only item)
and runs what a CPU reaches at tiny size: the same steps in fp32 on a small U-Net at 16x16, a tiny DDIM
batch and a tiny FID; it exits 0 unless one of those fails.  The step time does not depend on pixel
values, so the steps train on random images of the data set's shape.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import PAPER_NET, TrainStep  # noqa: E402
from bench.common import rounds, sync, timed  # noqa: E402
from kl_repro.core import store  # noqa: E402
from kl_repro.core.config import ConfigError  # noqa: E402
from kl_repro.core.registry import paper_values  # noqa: E402
from kl_repro.data import CHANNELS, DataConfig, ImageDataset, derive_seed, load_images  # noqa: E402
from kl_repro.evaluation.distances import frechet_distance, gaussian_stats  # noqa: E402
from kl_repro.evaluation.features import build_extractor, extract_features  # noqa: E402
from kl_repro.evaluation.reference import ReferenceConfig, reference_stats, reference_stats_from_images  # noqa: E402
from kl_repro.nets import NetConfig  # noqa: E402
from kl_repro.paper_a.ddim import ddim_sample  # noqa: E402
from kl_repro.paper_a.losses import DiffusionConfig  # noqa: E402
from kl_repro.paper_a.training.config import RunConfig, TrainConfig  # noqa: E402
from kl_repro.pipeline.plan import GPU_CHECK_FILE  # noqa: E402

# Table 2's columns (and KL*, which Sec. 6.5 says costs about the baseline's time) -> DiffusionConfig fields
MODELS = {
    "Baseline-b16": dict(model="baseline"),
    "KL-10d1-b16": dict(model="kl_partial", d=10, d_prime=1),
    "KL-10d4-b16": dict(model="kl_partial", d=10, d_prime=4),
    "KL-8d": dict(model="kl", d=8),
    "KL-10d": dict(model="kl", d=10),
    "KL*-8d-b16": dict(model="kl_star", d=8),
}
TINY_NET = dict(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)
SCORE_NETS = "kl_repro.paper_b.score_nets"
GPU_ONLY = {
    "train_steps": "fp16 AMP with TF32 at the paper's network and size (the CPU ran fp32 steps of a small U-Net)",
    "peak_memory": "peak GPU memory beside Table 2's VRAM",
    "step_ratios": "KL/baseline step-time ratios on a GPU beside Table 2's",
    "ddim": "a DDIM batch of the paper's network on the GPU (the CPU ran a tiny batch)",
    "fid": "a 1,000-sample FID (the CPU ran a tiny one)",
    "two_process": "a two-process run on two GPUs",
    "score_nets": "one forward of paper B's deep networks on the GPU",
    "cost_model": "the measured costs `kl-repro plan` uses for GPU profiles",
}


def _size(cuda: bool, quick: bool, resolution: int) -> dict:
    """What is run: the paper's network on CUDA; a small U-Net at 16x16 on CPU (smaller still with ``quick``)."""
    if cuda:
        return dict(net=PAPER_NET, res=resolution, B=16, rounds=3 if quick else 10, fid_n=1000, ddim_n=(1000, 200))
    n = 8 if quick else 16  # the baseline's DDIM samples are the FID's
    return dict(net=TINY_NET, res=16, B=2 if quick else 4, rounds=1 if quick else 2, fid_n=n, ddim_n=(n, 4))


def _run_config(model: str, dataset: str, size: dict) -> RunConfig:
    """The RunConfig of one checked model (fp16 AMP on CUDA by the default ``auto``, fp32 on CPU; TF32 on)."""
    return RunConfig(data=DataConfig(name=dataset, resolution=size["res"]), net=NetConfig(**size["net"]),
                     diffusion=DiffusionConfig(**MODELS[model]),
                     train=TrainConfig(B=size["B"], steps=10**6, sample_every=0, n_grid_samples=0, tf32=True))


def _random_images(n: int, dataset: str, res: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, CHANNELS[dataset], res, res), generator=g, dtype=torch.uint8)


def _table2() -> dict:
    t2 = paper_values("A")["table2"]
    s = {k: h * 3600 / 10_000 for k, h in t2["hours_per_10k_steps"].items()}
    return {"source": t2["source"], "vram_mb": t2["vram_mb"], "s_per_step": s}


def _one_model(name: str, dataset: str, size: dict, dev: torch.device) -> tuple[dict, TrainStep]:
    """Warm-up step (FLOPs, peak memory), then ``rounds`` timed steps of one model."""
    cfg = _run_config(name, dataset, size)
    data = ImageDataset(_random_images(256, dataset, size["res"], 0), torch.full((256,), -1), flip=True)
    step = TrainStep(cfg, data, dev)
    losses = [step.measured_step()]
    t = rounds({name: lambda: losses.append(step.step())}, size["rounds"], dev)
    s = t.median(name)
    row = {"model": name, "B": size["B"], "network_rows": _rows(MODELS[name], size["B"]),
           "precision": step.mp, "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if dev.type == "cuda" else None,
           "finite_loss": all(math.isfinite(v) for v in losses), "last_loss": round(losses[-1], 5), "steps": len(losses),
           "step_s": round(s, 5), "gflop_per_step": round(step.flop / 1e9, 2), "tflop_per_s": round(step.flop / s / 1e12, 3),
           "peak_mem_mb": round(step.peak_mb, 1)}
    if dev.type == "cuda":
        row["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
    return row, step


def _ratios(rows: list[dict], t2: dict) -> list[dict]:
    """Step time over the baseline's, ours (median step times of this run) and Table 2's."""
    base = rows[0].get("step_s")
    return [{"model": r["model"], "ours": round(r["step_s"] / base, 3) if base and r.get("step_s") else None,
             "paper": round(t2["s_per_step"][r["model"]] / t2["s_per_step"]["Baseline-b16"], 3) if r["model"] in t2["s_per_step"] else None}
            for r in rows[1:]]


def train_steps(dataset: str, size: dict, dev: torch.device) -> tuple[dict, dict]:
    """Every model's step beside Table 2; returns the section and the baseline / KL-8d steps (for DDIM and FID).

    A non-finite loss (``TrainStep`` raises ``FloatingPointError``) is recorded as ``finite_loss: false``; the check then fails.
    """
    t2, rows, kept = _table2(), [], {}
    for name in MODELS:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            row, step = _one_model(name, dataset, size, dev)
        except FloatingPointError as e:
            row, step = {"model": name, "finite_loss": False, "error": str(e)}, None
        row["paper_table2"] = ({"vram_mb": t2["vram_mb"][name], "s_per_step": round(t2["s_per_step"][name], 3)}
                               if name in t2["s_per_step"] else "not in Table 2 (Sec. 6.5: about the baseline's time)")
        rows.append(row)
        if name in ("Baseline-b16", "KL-8d") and step is not None:
            kept[name] = step
        del step
    section = {"what": f"{dataset} {size['res']}x{size['res']}, {'paper' if size['net'] is PAPER_NET else 'tiny'} U-Net "
               f"{dict(size['net'])}, B = {size['B']} for every model (Table 2's KL-8d and KL-10d: B unstated, taken as 16), "
               "random images of that shape", "rows": rows, "step_ratios": _ratios(rows, t2),
               "peak_mem": "torch's peak allocation on the GPU" if dev.type == "cuda" else "the process's peak resident memory (CPU)",
               "paper_source": t2["source"] + "; its VRAM is the whole process (nvidia-smi)"}
    return section, kept


def _rows(fields: dict, B: int) -> int:
    """Network rows per step (Paper A eqs. (19), (20), (25)): B * d, B * d', or B."""
    return B * {"kl": fields.get("d", 1), "kl_partial": fields.get("d_prime", 1)}.get(fields["model"], 1)


def ddim(kept: dict, dataset: str, size: dict, dev: torch.device) -> tuple[dict, torch.Tensor]:
    """DDIM batches of the baseline and KL-8d EMA networks; returns the section and the baseline's samples (for the FID)."""
    out, samples = {}, None
    for (name, step), n in zip(kept.items(), size["ddim_n"]):
        cfg, net = step.cfg, step.ema.ema_model
        S = cfg.sampler.S if cfg.diffusion.model == "baseline" else cfg.diffusion.T
        sampler = cfg.sampler.replace(S=S)
        shape = (CHANNELS[dataset], size["res"], size["res"])
        box = {}
        t = timed(lambda: box.update(x=ddim_sample(net, cfg.diffusion, sampler, n, 0, 100, shape, device=dev)), dev)
        rows_per_step = n * S * (cfg.diffusion.d if cfg.diffusion.model == "kl" else 1)
        out[name] = {"images": n, "S": S, "eta": sampler.eta, "batch_size": 100, "seconds": round(t, 3),
                     "images_per_s": round(n / t, 1), "ms_per_network_row": round(t / rows_per_step * 1e3, 5),
                     "finite": bool(torch.isfinite(box["x"]).all()), "in_range": bool(box["x"].abs().max() <= 1.0 + 1e-6)}
        if name == "Baseline-b16":
            samples = box["x"]
    return out, samples


def _reference(dataset: str, n: int, res: int, ext, dev: torch.device) -> tuple[object, str]:
    """Reference statistics of ``n`` real training images if the data folder has them, else of ``n`` random images."""
    try:
        ref = ReferenceConfig(dataset=dataset, split="train", resolution=res, num_images=n)
        return reference_stats(ref, ext, batch_size=100, device=str(dev)), f"real: first {n} {dataset} training images"
    except ConfigError as e:  # the data set is not in the data folder (the message names the missing files)
        why = str(e).split(":")[0]
        images = _random_images(n, dataset, res, 1)
        stats = reference_stats_from_images(images, {"dataset": "random-uint8", "split": "seed1"}, ext, batch_size=100)
        return stats, f"random: {n} uniform random uint8 images ({why})"


def fid(samples: torch.Tensor, dataset: str, size: dict, dev: torch.device) -> dict:
    """FID of the baseline's DDIM samples (Inception, offline weights) against real or random reference images."""
    t0 = time.perf_counter()
    ext = build_extractor("inception-v3-compat", None, str(dev))
    load_s = time.perf_counter() - t0
    stats, which = _reference(dataset, size["fid_n"], size["res"], ext, dev)
    box = {}
    t = timed(lambda: box.update(f=extract_features(ext, samples, batch_size=100)["features"]), dev)
    value = frechet_distance(*gaussian_stats(box["f"]), stats.mu, stats.sigma)
    return {"metric": "FID", "value": round(float(value), 3), "finite": math.isfinite(value), "samples": int(len(samples)),
            "reference": which, "extractor": ext.description or ext.name, "extractor_load_s": round(load_s, 2),
            "feature_s": round(t, 3), "ms_per_feature_image": round(t / len(samples) * 1e3, 4),
            "note": "samples of a network trained for a few steps: the value only shows that the pipeline runs"}


def two_process(cuda: bool) -> dict:
    """A 20-step KL run on 8x8 digits in two processes (``torchrun``), the entry point a multi-GPU user launches."""
    n = torch.cuda.device_count() if cuda else 0
    if n < 2:
        return {"checked": False, "why": f"{n} GPU(s): a two-process GPU run needs two (the test suite runs two CPU processes)"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "kl_repro.pipeline.cli", "train",
               "--runs-dir", tmp, "--quiet", *sum((["--set", s] for s in ("dataset=digits", "model=kl", "steps=20", "B=16", "dim=16",
                                                                          "dim_mults=[1, 2]", "checkpoint_every=10", "sample_every=0",
                                                                          "n_grid_samples=0", "eval_every=0")), [])]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        finished = sorted(p.parent.name for p in Path(tmp).glob("*/finished.json"))
    return {"checked": True, "gpus": n, "returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "finished_runs": finished, "ok": proc.returncode == 0 and len(finished) == 1,
            "stderr_tail": proc.stderr[-600:] if proc.returncode else ""}


def score_nets(dev: torch.device, quick: bool) -> dict:
    """One forward ``(x, t)`` of ``ncsnpp_deep()`` and ``ddpmpp_deep()`` at CIFAR10-32 size, where the module exists."""
    if importlib.util.find_spec(SCORE_NETS) is None:
        return {"checked": False, "why": f"{SCORE_NETS} is not in this checkout (paper B's NCSN++/DDPM++ deep networks)"}
    if quick:
        return {"checked": False, "why": "--quick skips the deep networks"}
    mod = importlib.import_module(SCORE_NETS)
    out = {"checked": True}
    B = 64 if dev.type == "cuda" else 1
    for name in ("ncsnpp_deep", "ddpmpp_deep"):
        net = getattr(mod, name)().to(dev).eval()
        x, t = torch.randn(B, 3, 32, 32, device=dev), torch.rand(B, device=dev) * (1 - 1e-5) + 1e-5
        with torch.no_grad():
            timed(lambda: net(x, t), dev)  # warm-up
            s = timed(lambda: net(x, t), dev)
            y = net(x, t)
        out[name] = {"batch": B, "forward_s": round(s, 4), "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                     "output_shape": list(y.shape), "finite": bool(torch.isfinite(y).all())}
        del net
    return out


def cost_model(steps: dict, dd: dict, fd: dict, dev_name: str) -> dict:
    """The measured costs `kl-repro plan` uses (kl_repro.pipeline.plan.CostModel): two-point fit of the step time in network rows."""
    rows = {r["model"]: r for r in steps["rows"]}
    base, kl = rows["Baseline-b16"], rows["KL-8d"]
    per_row = max(0.0, (kl["step_s"] - base["step_s"]) / (kl["network_rows"] - base["network_rows"]))
    return {"device": dev_name, "step_overhead_s": max(0.0, base["step_s"] - base["network_rows"] * per_row),
            "s_per_image_step": per_row, "s_per_forward": max(v["ms_per_network_row"] for v in dd.values()) / 1e3,
            "s_per_feature": fd["ms_per_feature_image"] / 1e3, "resolution": 32,
            "source": f"make gpu-check {time.strftime('%Y-%m-%d')}: Baseline-b16 and KL-8d-b16 steps of the paper's U-Net at "
                      f"{steps['what'].split(',')[0]} (fp16 AMP, TF32), DDIM batches of 100 images, Inception features of "
                      f"{fd['samples']} images"}


def _section(summary: dict, key: str, fn, *args):
    """Run one section; an error is recorded in the summary (and fails the check) instead of hiding the others."""
    t0 = time.perf_counter()
    try:
        result = fn(*args)
    except Exception:  # report every section: one failure should not hide the rest
        summary[key] = {"error": traceback.format_exc(limit=4)}
        summary["failed"].append(key)
        return None
    finally:
        summary["seconds"][key] = round(time.perf_counter() - t0, 1)
    return result


def check(dataset: str = "cifar10", resolution: int = 32, quick: bool = False, force_cpu: bool = False) -> dict:
    """The whole check as a JSON-able summary (see the module docstring)."""
    cuda = torch.cuda.is_available() and not force_cpu
    dev = torch.device("cuda" if cuda else "cpu")
    dev_name = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    size = _size(cuda, quick, resolution)
    s = {"cuda": cuda, "device": dev_name, "gpus": torch.cuda.device_count() if cuda else 0, "torch": torch.__version__,
         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "failed": [], "seconds": {},
         "not_checked": [] if cuda else [f"not checked without CUDA: {k}: {v}" for k, v in GPU_ONLY.items()]}
    torch.manual_seed(derive_seed(0, "gpu-check"))
    steps = _section(s, "train_steps", train_steps, dataset, size, dev)
    if steps is not None:
        s["train_steps"], kept = steps
        s["failed"] += [f"train_steps: non-finite loss of {r['model']}" for r in s["train_steps"]["rows"] if not r["finite_loss"]]
        out = _section(s, "ddim", ddim, kept, dataset, size, dev)
        if out is not None:
            s["ddim"], samples = out
            s["fid"] = _section(s, "fid", fid, samples, dataset, size, dev) or s.get("fid")
    if cuda:
        s["two_process"] = _section(s, "two_process", two_process, cuda) or s.get("two_process")
        s["failed"] += ["two_process"] if s["two_process"].get("checked") and not s["two_process"].get("ok") else []
    else:
        s["two_process"] = {"checked": False, "why": "not checked without CUDA"}
    s["score_nets"] = _section(s, "score_nets", score_nets, dev, quick) or s.get("score_nets")
    if cuda and not s["failed"] and resolution == 32:
        s["cost_model"] = cost_model(s["train_steps"], s["ddim"], s["fid"], dev_name)
    sync(dev)
    s["total_s"] = round(sum(s["seconds"].values()), 1)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("cifar10", "mnist"), default="cifar10", help="image shape of the steps (default cifar10)")
    ap.add_argument("--resolution", type=int, default=32,
                    help="image size on CUDA (default 32; 64 compares with Table 2's presumed size, and stores no cost model)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and samples (the test suite's CPU pass)")
    ap.add_argument("--cpu", action="store_true", help="the CPU path even where CUDA is present")
    ap.add_argument("--out", help=f"also write the JSON here (default: <results>/{GPU_CHECK_FILE})")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of torch and BLAS on the CPU path (default 1: fastest on a small shared CPU)")
    args = ap.parse_args(argv)
    if args.cpu or not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
        with threadpool_limits(args.threads):
            summary = check(args.dataset, args.resolution, args.quick, args.cpu)
    else:
        summary = check(args.dataset, args.resolution, args.quick, args.cpu)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    out = Path(args.out) if args.out else store.results_root() / GPU_CHECK_FILE
    store.atomic_write_text(out, text + "\n")
    print(f"written to {out}", file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
