"""Benchmark of DDIM sampling (paper A, eqs. (23)-(24)) on this machine (not a test; ``make bench`` or run this file).

Images per second of ``kl_repro.paper_a.ddim.ddim_sample`` for the baseline (S = 20 of T = 1000) and the
KL models (S = T = 20; KL-8d evaluates the network on ``8 x batch`` rows per step, KL*-8d on ``batch``
rows), measured side by side in interleaved rounds on randomly initialised networks (the cost does
not depend on the weights), with the peak memory of each call and the effect of
``DiffusionConfig.chunk`` (rows per network call) on KL-8d's memory.  The paper's U-Net at 32x32 is
timed for the baseline and KL*-8d.  Timings on shared machines are noisy: compare the ratios of one run.

    .venv/bin/python bench/bench_sampling.py [--quick]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import MODELS, PAPER_NET, SMALL_NET, run_config  # noqa: E402
from bench.common import PeakMemory, device, load_average, rounds  # noqa: E402


def _sampler(model: str, net: dict, resolution: int, dev, chunk: int | None = None):
    """``(draw(n, batch_size), cfg)``: DDIM with the run's default sampler (baseline S = 20, KL S = T) on a fresh network."""
    from kl_repro.data import derive_seed, data_shape
    from kl_repro.paper_a.training.run import build_model
    from kl_repro.paper_a.ddim import ddim_sample

    cfg = run_config(model, net, resolution, 16)
    if model != "baseline":
        cfg = cfg.replace(sampler=cfg.sampler.replace(S=cfg.diffusion.T))
    diff = cfg.diffusion.replace(chunk=chunk)
    torch.manual_seed(derive_seed(0, "init"))
    model_ = build_model(cfg).to(dev).eval()
    shape = data_shape(cfg.data)

    def draw(n: int, batch_size: int) -> torch.Tensor:
        return ddim_sample(model_, diff, cfg.sampler, n, 0, batch_size, shape, device=dev)

    return draw, cfg


def _rows(samplers: dict, n: int, batch_size: int, n_rounds: int, dev) -> list[dict]:
    """Interleaved rounds of ``n`` images per sampler; the peak memory is taken during the first round."""
    peaks: dict[str, PeakMemory] = {}

    def contender(name, draw):
        def f():
            if name in peaks:
                return draw(n, batch_size)
            with PeakMemory(dev) as peaks[name]:
                return draw(n, batch_size)
        return f

    t = rounds({k: contender(k, f) for k, (f, _) in samplers.items()}, n_rounds, dev, warmup=0)
    first = next(iter(samplers))
    rows = []
    for k, (f, cfg) in samplers.items():
        rows.append({"sampler": k, "S": cfg.sampler.S, "n": n, "batch": batch_size, "seconds": round(t.median(k), 3),
                     "images_per_s": round(n / t.median(k), 2), "time_ratio": round(t.ratio(k, first), 3),
                     "peak_mem_mb": round(peaks[k].peak_mb, 1), "call_extra_mem_mb": round(peaks[k].extra_mb, 1)})
    return rows


def run(quick: bool = False, threads: int | None = 1) -> dict:
    """DDIM images/s and peak memory; ``threads`` as in ``bench_train.run`` (1 CPU thread by default)."""
    dev = device()
    old = torch.get_num_threads()
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        small = dict(SMALL_NET, dim=8, attn_dim_head=8) if quick else SMALL_NET
        res = 8 if quick else 16
        n = 8 if quick else 16
        out: dict = {"device": str(dev), "torch_threads": torch.get_num_threads(), "load_average_start": load_average(),
                     "small_net": {**small, "data": f"{res}x{res}, 1 channel"}}
        _sampler("baseline", small, res, dev)[0](2, 2)  # warm-up: allocator and kernel selection
        samplers = {m: _sampler(m, small, res, dev) for m in ("baseline", "KL-8d", "KL*-8d")}
        samplers["KL-8d chunk=batch"] = _sampler("KL-8d", small, res, dev, chunk=n)
        out["ddim_small"] = _rows(samplers, n, n, 1 if quick else 2, dev)
        if not quick:  # the paper's U-Net (35.7 M parameters) at 32x32, a few images
            out["paper_net"] = {**PAPER_NET, "data": "32x32, 1 channel",
                                "note": "KL-8d (8 network rows per image and step) left out for time"}
            paper = {m: _sampler(m, PAPER_NET, 32, dev) for m in ("baseline", "KL*-8d")}
            out["ddim_paper_net"] = _rows(paper, 4, 4, 1, dev)
        out["models"] = {k: MODELS[k] for k in ("baseline", "KL-8d", "KL*-8d")}
    finally:
        torch.set_num_threads(old)
    out["load_average_end"] = load_average()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2, default=str))
