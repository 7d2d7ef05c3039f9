"""Benchmark of the sample-quality metrics on this machine (not a test; ``make bench`` or run this file).

Measures torch-fidelity's ``inception-v3-compat`` (offline weights) throughput on 32x32 uint8 images,
which it resizes to 299x299 internally, and the cost of the distances on 2048-d features; from these
it extrapolates the time of a 2,000-sample proxy FID (reference statistics cached, and not).
Timings on shared 2-core machines are noisy: compare ratios from one run.

    .venv/bin/python bench/bench_metrics.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def _timed(fn, repeats: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def run(quick: bool = False) -> dict:
    """Inception images/s (batch 10 when quick, else 50, after one warm-up batch) and extrapolated FID costs."""
    from kl_repro.evaluation import distances as M
    from kl_repro.evaluation import features as F

    batch, n_batches = (10, 1) if quick else (50, 3)
    t_build = time.perf_counter()
    ext = F.build_extractor("inception-v3-compat")
    t_build = time.perf_counter() - t_build
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * n_batches, 3, 32, 32), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        ext.fn(images[:2])  # warm-up (allocations, kernels)
        t_feat = _timed(lambda: [ext.fn(images[i: i + batch]) for i in range(0, len(images), batch)])
    ips = len(images) / t_feat

    rng = np.random.default_rng(0)
    n_feat = 300 if quick else 2000
    f1 = rng.random((n_feat, 2048)).astype(np.float32)
    f2 = rng.random((n_feat, 2048)).astype(np.float32)
    t_stats = _timed(lambda: (M.gaussian_stats(f1), M.gaussian_stats(f2))) * (2000 / n_feat)  # O(N D^2): linear in N
    s1, s2 = M.gaussian_stats(f1), M.gaussian_stats(f2)
    t_fd = _timed(lambda: M.frechet_distance(*s1, *s2))
    kid_subsets = 5 if quick else 20
    t_kid = _timed(lambda: M.kernel_distance(f1, f2, M.KIDConfig(subsets=kid_subsets, subset_size=min(1000, n_feat))))
    t_kid_100 = t_kid * 100 / kid_subsets * (1000 / min(1000, n_feat)) ** 2  # 100 subsets of 1000 (default)

    proxy = 2000 / ips + t_stats / 2 + t_fd + t_kid_100
    return {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "weights": ext.description,
        "batch_size": batch,
        "images_timed": len(images),
        "inception_images_per_s": round(ips, 2),
        "extractor_build_s": round(t_build, 2),
        "frechet_2048d_s": round(t_fd, 2),
        "kid_100x1000_s_est": round(t_kid_100, 2),
        "proxy_fid_2k_s_est": round(proxy, 1),  # 2k samples' features + stats + FD + KID, reference cached
        "proxy_fid_2k_with_ref_s_est": round(proxy + 2000 / ips + t_stats / 2, 1),  # plus a 2k reference set
        "quick": quick,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
