"""Benchmark of paper B's pipeline on this machine (not a test; ``make bench`` or run this file).

1. Kernel gEDMD set-up (Gram matrices ``G0``, ``K`` and the eigenpairs) at M = 2000 in 784
   dimensions (acceptance: under 10 s on a 2-core CPU), and its growth with M (500 ... 5000) with
   the fitted exponent of ``t ~ M^p``.
2. The per-image time ratio PC1000 / FP sampler for 1 and 100 images, with and without the FP
   set-up (M score calls, Gram matrices, eigenpairs, prior projection), on the **same** score model:
   the ideal score of a data subset (MNIST when ``$KL_REPRO_DATA`` has it, else ``digits``).
3. Paper B's speed claim on the paper's own networks (``kl_repro.paper_b.speed``): NCSN++ deep (VE)
   and DDPM++ deep (VP) at CIFAR-10 size with their parameter counts; PC1000 (VE), P1000 and PC1000
   (VP) against the whole FP pipeline (M = 2000 network evaluations at t*, Gram matrices, eigenproblem,
   prior projection, J = 1000 Langevin steps), for 1 and 100 images and one 200-image group, with and
   without set-up, beside the paper's 261.6x / 119.8x (1 image) and 23.9x / 11.0x (100 images).  The
   network forward is timed at batch 1 (3 calls) and batch 100 (1 call) and extrapolated (the note says how).
4. For context, one forward pass of paper A's U-Net (35.7 M parameters) at batch 1, and its ratio to
   NCSN++ deep's.

Timings on shared machines are noisy: compare the ratios of one run.

    .venv/bin/python bench/bench_paper_b.py [--quick]
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import numpy as np
import torch


@contextlib.contextmanager
def threads(n: int | None):
    """Limit BLAS/OpenMP (threadpoolctl) and torch to ``n`` threads (``None``: leave the defaults)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


def _images(n: int, quick: bool) -> tuple[torch.Tensor, str]:
    """``n`` images in [0, 1] ``(n, C, H, W)`` float64: MNIST 28x28 if available, else digits (8x8), else uniform noise."""
    from kl_repro.core.config import ConfigError
    from kl_repro.data import DataConfig, load_images

    if not quick:
        try:
            x, _ = load_images(DataConfig(name="mnist", resolution=28, subset=n, flip=False))
            return x.double() / 255.0, f"MNIST 28x28, first {len(x)} training images"
        except (ConfigError, FileNotFoundError, OSError):
            pass
    x, _ = load_images(DataConfig(name="digits", subset=n, flip=False))
    return x.double() / 255.0, f"digits 8x8, first {len(x)} training images"


def _points_784(M: int, seed: int = 0) -> tuple[np.ndarray, str]:
    from kl_repro.core.config import ConfigError
    from kl_repro.data import DataConfig, load_images

    try:
        x, _ = load_images(DataConfig(name="mnist", resolution=28, subset=M, flip=False))
        if len(x) == M:
            return x.reshape(M, -1).double().numpy() / 255.0, "MNIST 28x28"
    except (ConfigError, FileNotFoundError, OSError):
        pass
    return np.random.default_rng(seed).uniform(0, 1, (M, 784)), "uniform noise in [0,1]^784 (MNIST not found)"


def gedmd_setup_time(M: int, seed: int = 0) -> dict:
    """Time of ``G0``, ``K`` (closed form) and the eigenpairs (truncated basis, 6 slowest modes) for M points in 784-d.

    The drift is the VE reverse drift of the ideal score of the points themselves at ``sigma(t*) = 0.5``
    on perturbed copies (non-zero, realistic); its cost (M score calls) is reported separately.
    """
    from kl_repro.paper_b import gedmd
    from kl_repro.paper_b.fp_operator import drift_at
    from kl_repro.paper_b.scores import IdealScore
    from kl_repro.paper_b.sde import VESDE

    X, source = _points_784(M, seed)
    sde = VESDE()
    t_star = float(np.log(0.5 / sde.sigma_min) / np.log(sde.sigma_max / sde.sigma_min))
    Xt = torch.from_numpy(X)
    Xp = Xt + 0.5 * torch.randn(Xt.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t0 = time.perf_counter()
    B, a = drift_at(IdealScore(Xt, sde), sde, Xp, t_star)
    t1 = time.perf_counter()
    zeta = 22.0 * 10.0 / 18.6  # the paper's zeta scaled to MNIST's median pairwise distance (about 10)
    G0, K = gedmd.gram_generator(Xp.numpy(), B, a, zeta)
    t2 = time.perf_counter()
    lam, V, U, pairing, info = gedmd.solve(G0, K, n_keep=6)
    t3 = time.perf_counter()
    return {"M": M, "d": 784, "data": source, "t_drift_s": t1 - t0, "t_gram_s": t2 - t1, "t_eig_s": t3 - t2,
            "t_gram_eig_s": t3 - t1, "rank_r": info["r"], "lam0": float(lam[0].real)}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pc_vs_fp(quick: bool) -> dict:
    """Per-image times of PC1000 and of the FP sampler (paper preset, VE) with the same ideal score."""
    from kl_repro.paper_b import fp_config, fp_operator, groups, inits, langevin
    from kl_repro.paper_b.pc import pc_preset, pc_sample
    from kl_repro.paper_b.scores import IdealScore
    from kl_repro.paper_b.sde import VESDE

    n_pool = 300 if quick else 2000
    pool, source = _images(n_pool, quick)
    sde = VESDE(N=100) if quick else VESDE()
    score = IdealScore(pool, sde)
    cfg = fp_config.fp_preset("paper", M=min(2000, len(pool)), J=100 if quick else 1000, bandwidth="median")
    rows = []
    for n in (1, 100):
        # Shared machines have load spikes: each time is the minimum of two runs for one image (one run for 100).
        repeats_pc = 2 if n == 1 else 1
        t_pc = min(_timed(lambda: pc_sample(score, sde, n, pc_preset("ve_pc1000"), torch.Generator().manual_seed(n)))[1]
                   for _ in range(repeats_pc))
        nfe = sde.N * 2

        def fp_group():
            X, _, gg = groups.group_references(pool, sde, cfg, group=n)
            dens = fp_operator.fit_density(score, sde, X, cfg, gg)
            return dens, gg

        setups, samplings = [], []
        for _ in range(2 if n == 1 else 1):  # 100 images: one run (it alone takes minutes on 2 cores)
            (dens, gg), t_setup = _timed(fp_group)
            x0 = inits.initial_points(cfg, n, tuple(pool.shape[1:]), pool, gg)
            _, _, t_sampling = langevin.run_chains(dens, x0, cfg, gg)
            setups.append(t_setup)
            samplings.append(t_sampling)
        t_setup, t_sampling = min(setups), min(samplings)
        rows.append({
            "images": n, "pc_s": t_pc, "pc_nfe": nfe, "fp_setup_s": t_setup, "fp_sampling_s": t_sampling,
            "ratio_with_setup": (t_pc / n) / ((t_setup + t_sampling) / n),
            "ratio_without_setup": (t_pc / n) / (t_sampling / n),
        })
    return {"data": source, "score": f"ideal score of {len(pool)} images (VE, [0,1])", "M": cfg.M, "J": cfg.J,
            "pc": f"{pc_preset('ve_pc1000').label}, N = {sde.N}", "rows": rows}


def unet_nfe_estimate(quick: bool) -> dict:
    """Forward time of paper A's U-Net at 32x32, batch 1 (context for the deep networks), and the PC1000 time it implies."""
    from kl_repro.nets import NetConfig, build_net, count_parameters

    net = build_net(NetConfig(), (3, 32, 32)).eval()
    x, t = torch.randn(1, 3, 32, 32), torch.full((1,), 500.0)
    with torch.no_grad():
        net(x, t)  # warm-up
        _, dt = _timed(lambda: net(x, t))
    return {"parameters": count_parameters(net), "forward_batch1_s": dt, "pc1000_estimate_batch1_s": 2000 * dt}


def deep_nets(quick: bool) -> dict:
    """Paper B's speed ratios on NCSN++ deep / DDPM++ deep (``kl_repro.paper_b.speed``), as printable tables.

    One thread for torch and BLAS: on a 2-core machine shared with other jobs, two OpenMP threads made
    an NCSN++ forward about 10x slower (37-40 s against 3.3-4.3 s at batch 1, load average 12-15); PC and FP are timed alike, so the
    ratios compare the two samplers per core.
    """
    from kl_repro.paper_b import speed

    cfg = speed.SpeedConfig(M=200, J_timed=5, forward_batches=(1, 4), forward_calls=(1, 1), overhead_steps=3) if quick else speed.BENCH
    with threads(1):
        rep = speed.speed_report(cfg)
    archs = rep["architectures"].values()
    nets = [{"network": a["network"], "parameters": a["parameters"], "score_sde_parameters": a["paper_parameters"],
             "relative_difference": a["parameters"] / a["paper_parameters"] - 1,
             **{f"forward_batch{b}_s": t for b, t in a["forward_s"].items()},
             **{f"wall_{k}_s": v for k, v in a["wall_s"].items()}} for a in archs]
    fp = [{"network": a["network"], **{k: v for k, v in a["fp"].items() if k != "sampling_s"},
           **{f"langevin_{n}_images_s": v for n, v in a["fp"]["sampling_s"].items()}} for a in archs]
    ratios = [{"network": a["network"], **r} for a in archs for r in a["rows"]]
    return {"nets": nets, "fp": fp, "ratios": ratios, "note": rep["note"]}


def run(quick: bool = False) -> dict:
    """gEDMD set-up times (M = 2000 in 784-d; growth in M), PC1000 / FP ratios, U-Net NFE estimate.

    The growth curve uses the default BLAS threads; at M = 2000 (the acceptance size) the time with one
    thread is measured too, since on a 2-core machine shared with other jobs one thread is often faster.
    The load average before and after is recorded, since it changes what a timing means.
    """
    out = {"load_average_start": os.getloadavg(), "default_threads": torch.get_num_threads()}
    Ms = (500, 1000) if quick else (500, 1000, 2000, 3000, 5000)
    growth = []
    for M in Ms:
        row = {}
        for label, n in (("default", None), ("1thr", 1)):
            if label == "1thr" and M != 2000:
                continue
            with threads(n):
                r = gedmd_setup_time(M)
            row.update({"M": M, "rank_r": r["rank_r"], f"t_drift_s_{label}": r["t_drift_s"], f"t_gram_s_{label}": r["t_gram_s"],
                        f"t_eig_s_{label}": r["t_eig_s"], f"t_gram_eig_s_{label}": r["t_gram_eig_s"]})
            data = r["data"]
        growth.append(row)
    big = [r for r in growth if r["M"] >= 1000]
    slope = float(np.polyfit(np.log([r["M"] for r in big]), np.log([r["t_gram_eig_s_default"] for r in big]), 1)[0]) if len(big) >= 2 else float("nan")
    at2000 = next((r for r in growth if r["M"] == 2000), None)
    best = min(at2000["t_gram_eig_s_1thr"], at2000["t_gram_eig_s_default"]) if at2000 else None
    out.update({
        "gedmd_growth": growth,
        "gedmd_data": data,
        "gedmd_growth_exponent": slope,
        "gedmd_M2000_d784_s": best,
        "gedmd_M2000_under_10s": (best < 10.0) if best is not None else None,
    })
    ratio = pc_vs_fp(quick)
    out["pc_vs_fp"] = ratio["rows"]
    out["pc_vs_fp_setting"] = {k: v for k, v in ratio.items() if k != "rows"}
    deep = deep_nets(quick)
    out["deep_nets"], out["deep_net_fp"], out["deep_net_speed_ratios"], out["deep_net_note"] = (
        deep["nets"], deep["fp"], deep["ratios"], deep["note"])
    with threads(1):  # as the deep networks, so the ratio below compares like with like
        out["unet"] = unet_nfe_estimate(quick)
    out["unet"]["ncsnpp_deep_over_unet_batch1"] = deep["nets"][0]["forward_batch1_s"] / out["unet"]["forward_batch1_s"]
    out["load_average_end"] = os.getloadavg()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
