"""Paper B's speed claim timed on the paper's own networks: PC baselines against the FP pipeline.

Paper B, Table 1 and Sec. 4.1 (Methods B.1, B.4): single-image sampling drops from 75.85 s to
0.29 s (261.6x, VE) and from 35.93 s to 0.30 s (119.8x, VP); 100 images 23.9x (VE) and 11.0x (VP).
Here, on one machine and with one network per SDE (:mod:`.score_nets`, random weights: a forward
pass costs the same whatever the weights):

* **PC baselines** (:mod:`.pc`): VE PC1000 (reverse diffusion + Langevin, snr 0.16: 2000 network
  evaluations), VP Euler-Maruyama P1000 (1000; Song et al.'s VP setting) and VP PC1000 (2000).  The
  time of ``n`` images is ``N [(NFE per step) t_fwd(n) + t_step(n)]``: ``t_fwd`` is the measured
  forward time of the network at batch ``n`` (or at a smaller measured batch, scaled by the batch
  size), ``t_step`` the sampler's own arithmetic per step, measured by running the sampler with a
  free score.  Nothing else happens in a PC step, so this extrapolation from a few network calls is
  the sampler's time up to timing noise.
* **FP pipeline** (:mod:`.groups`, :mod:`.fp_operator`, :mod:`.langevin`): the drift at the ``M``
  references (``M`` network evaluations at ``t*``, timed as ``M t_fwd(b) / b``), then, run for real at
  ``M`` on those references: Gram matrices, eigenproblem, prior projection and weights (the network
  is evaluated on one reference per call and its drift repeated over the rest: the values do not
  change the cost), then ``J`` Langevin steps (``J_timed`` run, scaled by ``J / J_timed``).

Each ratio is PC time over FP time for the same number of images, with and without the FP set-up
(drift, Gram, eigenpairs, projection); one group of ``group`` images gives the amortised case.  Times
are taken with the caller's thread settings (``bench/bench_paper_b.py`` uses one thread; the note
records the count) on the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from kl_repro.core.config import Config, ConfigError, require, to_dict
from kl_repro.core.registry import paper_values
from kl_repro.data import DataConfig, load_images
from kl_repro.paper_b import fp_operator
from kl_repro.paper_b.fp_config import fp_preset
from kl_repro.paper_b.groups import group_references
from kl_repro.paper_b.inits import initial_points
from kl_repro.paper_b.langevin import run_chains
from kl_repro.paper_b.pc import pc_preset, pc_sample
from kl_repro.paper_b.score_nets import PAPER_PARAMETERS, count_parameters, ddpmpp_deep, ncsnpp_deep
from kl_repro.paper_b.sde import VESDE, VPSDE, time_column

__all__ = ["SpeedConfig", "BENCH", "BOOK", "DeepNetScore", "time_forward", "forward_at", "pc_seconds",
           "paper_ratio", "speed_rows", "time_architecture", "speed_report", "deep_net_table1_rows"]

SHAPE = (3, 32, 32)  # CIFAR-10
ARCHITECTURES = {"ncsnpp_deep": (ncsnpp_deep, "ve", ("ve_pc1000",)),
                 "ddpmpp_deep": (ddpmpp_deep, "vp", ("vp_p1000", "vp_pc1000"))}
PC_LABELS = {"ve_pc1000": "PC1000 (reverse diffusion + Langevin, snr 0.16)", "vp_p1000": "P1000 (Euler-Maruyama)",
             "vp_pc1000": "PC1000 (reverse diffusion + Langevin, snr 0.01)"}


@dataclass(frozen=True)
class SpeedConfig(Config):
    """What is timed and what is extrapolated; defaults are the paper's sampler settings (Sec. 4.1)."""

    M: int = 2000  # FP reference points (paper)
    L: int = 5  # eigenfunctions (paper)
    J: int = 1000  # Langevin steps (paper)
    J_timed: int = 20  # Langevin steps actually run; their time is scaled by J / J_timed
    forward_batches: tuple[int, ...] = (1, 100)  # batch sizes whose forward pass is timed
    forward_calls: tuple[int, ...] = (3, 1)  # timed calls per batch size (the minimum is kept)
    images: tuple[int, ...] = (1, 100)  # numbers of images compared (Table 1's columns)
    group: int = 200  # one FP group of this many images, amortised (the paper's group size)
    overhead_steps: int = 20  # PC steps run with a free score to time the sampler's own arithmetic
    seed: int = 0

    def check(self) -> None:
        require(self.M >= self.L >= 1, f"need M >= L >= 1, got M={self.M}, L={self.L}")
        require(1 <= self.J_timed <= self.J, f"need 1 <= J_timed <= J, got {self.J_timed}, {self.J}")
        require(len(self.forward_batches) == len(self.forward_calls) >= 1, "one call count per forward batch")
        require(min(self.forward_batches) == 1 and min(self.forward_calls) >= 1, "batch 1 must be timed, calls >= 1")
        require(min(self.images) >= 1 and self.group >= 1 and self.overhead_steps >= 1, "images, group, overhead_steps >= 1")


BENCH = SpeedConfig()  # make bench: forwards measured at batch 1 (3 calls) and 100 (1 call), M = 2000
BOOK = SpeedConfig(M=500, forward_batches=(1, 4), forward_calls=(1, 1), overhead_steps=5)  # cpu book budget


class DeepNetScore:
    """score_sde's ``get_score_fn`` for a :class:`~kl_repro.paper_b.score_nets.DeepScoreNet`.

    VE: ``s(x, t) = net(x, sigma(t))``; VP: ``s(x, t) = -net(x, t) / sigma_t``.  ``rows``: evaluate the
    network on the first ``rows`` inputs of each call only and repeat their scores over the others
    (for timing the FP set-up without ``M`` evaluations; ``None``: all rows).  Counts evaluated images.
    """

    dtype = torch.float32

    def __init__(self, net: torch.nn.Module, sde: VESDE | VPSDE, rows: int | None = None):
        self.net, self.sde, self.rows, self.shape, self.images = net, sde, rows, SHAPE, 0

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        k = x.shape[0] if self.rows is None else min(self.rows, x.shape[0])
        xs, ts = x[:k].float(), time_column(t, x).reshape(-1)[:k].float()
        sigma = self.sde.sigma(ts)
        with torch.no_grad():
            s = self.net(xs, sigma) if self.sde.kind == "ve" else -self.net(xs, ts) / sigma.reshape(-1, 1, 1, 1)
        self.images += k
        reps = -(-x.shape[0] // k)
        return s.repeat(reps, 1, 1, 1)[: x.shape[0]].to(x.dtype)


class _FreeScore:
    """``s(x) = -x``: a score that costs nothing, to time a sampler's own arithmetic."""

    shape = SHAPE

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        return -x


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_forward(net: torch.nn.Module, batch: int, calls: int, seed: int = 0) -> float:
    """Seconds of one forward pass at ``batch`` (minimum over ``calls``; at batch 1 after one warm-up call)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *SHAPE, generator=g)
    t = torch.full((batch,), 0.5)
    with torch.no_grad():
        if batch == 1:
            net(x, t)
        return min(_seconds(lambda: net(x, t)) for _ in range(calls))


def forward_at(forward_s: dict[int, float], n: int) -> float:
    """Forward time at batch ``n``: measured, or the largest measured batch below ``n`` scaled by ``n / b``."""
    b = max((b for b in forward_s if b <= n), default=min(forward_s))
    return forward_s[b] * n / b


def pc_seconds(n: int, forward_s: dict[int, float], nfe_per_step: int, N: int, step_s: float) -> float:
    """PC time for ``n`` images: ``N (nfe_per_step t_fwd(n) + step_s)`` (module docstring)."""
    return N * (nfe_per_step * forward_at(forward_s, n) + step_s)


def _pc_step_seconds(sde, preset: str, n: int, steps: int) -> float:
    """The sampler's own time per step for ``n`` images (:func:`pc_sample` with a free score, ``steps`` steps).

    VP: ``beta`` is scaled by ``steps / N`` so the short run's discrete betas stay those of ``N`` steps.
    """
    scale = {"beta_min": sde.beta_min * steps / sde.N, "beta_max": sde.beta_max * steps / sde.N} if sde.kind == "vp" else {}
    short = sde.replace(N=steps, **scale)
    return _seconds(lambda: pc_sample(_FreeScore(), short, n, pc_preset(preset), torch.Generator().manual_seed(n))) / steps


def paper_ratio(kind: str, n: int) -> float | None:
    """Paper B's speed-up (Sec. 4.1 from Table 1) for SDE ``kind`` and ``n`` images: 261.6 / 23.9 (VE), 119.8 / 11.0 (VP)."""
    claim = paper_values("b")["claims"]["speedup"]
    col = {"ve": 0, "vp": 1}[kind]
    return {1: claim["speedup_1_image"][col], 100: claim["speedup_100_images"][col]}.get(n)


def speed_rows(kind: str, pc_s: dict[str, dict[int, float]], fp_setup_s: float, fp_sampling_s: dict[int, float],
               group: int) -> list[dict]:
    """The ratio rows: for each PC sampler and each number of images ``n`` (keys of ``fp_sampling_s``).

    ``ratio_without_setup = pc_s[n] / fp_sampling_s[n]``, ``ratio_with_setup = pc_s[n] / (fp_setup_s +
    fp_sampling_s[n])``: one FP group serves the ``n`` images.  ``n == group`` is the amortised group.
    """
    if fp_setup_s < 0 or any(v <= 0 for v in fp_sampling_s.values()):
        raise ConfigError("times must be positive")
    rows = []
    for sampler, times in pc_s.items():
        for n in sorted(fp_sampling_s):
            t_fp = fp_sampling_s[n]
            rows.append({"sampler": sampler, "images": n, "amortised_group": n == group, "pc_s": times[n],
                         "fp_setup_s": fp_setup_s, "fp_sampling_s": t_fp, "ratio_without_setup": times[n] / t_fp,
                         "ratio_with_setup": times[n] / (fp_setup_s + t_fp), "paper_ratio": paper_ratio(kind, n)})
    return rows


def _pool(n: int, kind: str, seed: int) -> tuple[torch.Tensor, str]:
    """``n`` reference candidates ``(n, 3, 32, 32)`` float64 in the model's scale (VE [0, 1], VP [-1, 1])."""
    try:
        x, _ = load_images(DataConfig(name="cifar10", subset=n, flip=False))
        x, source = x.double() / 255.0, f"CIFAR-10, first {n} training images"
    except (ConfigError, FileNotFoundError, OSError):
        g = torch.Generator().manual_seed(seed)
        x, source = torch.rand(n, *SHAPE, generator=g, dtype=torch.float64), "uniform-noise images (CIFAR-10 not found)"
    return (2 * x - 1 if kind == "vp" else x), source


def _fp_times(net, sde, cfg: SpeedConfig, forward_s: dict[int, float], n_list: list[int]) -> dict:
    """FP set-up and Langevin times (module docstring); the drift time is ``M t_fwd(b) / b``."""
    fp = fp_preset("paper", sde=sde.kind, M=cfg.M, L=cfg.L, J=cfg.J_timed, seed=cfg.seed)
    pool, source = _pool(cfg.M, sde.kind, cfg.seed)
    X, _, g = group_references(pool, sde, fp, group=0)
    t0 = time.perf_counter()
    eig, log_s, report = fp_operator.fit_operator(DeepNetScore(net, sde, rows=1), sde, X, fp, fp.L + 1, g)
    density = fp_operator.density_from_operator(eig, log_s, fp, report)
    operator_s = time.perf_counter() - t0 - report["t_drift"]
    b = max(forward_s)
    drift_s = cfg.M * forward_s[b] / b
    sampling = {}
    for n in n_list:
        x0 = initial_points(fp, n, SHAPE, pool, g)
        sampling[n] = run_chains(density, x0, fp, g)[2] * cfg.J / cfg.J_timed
    return {"setup_s": drift_s + operator_s, "drift_s": drift_s, "gram_eig_prior_s": operator_s,
            "t_gedmd_s": report["t_gedmd"], "rank_r": report.get("r"), "sampling_s": sampling, "references": source,
            "drift_batch": b}


def _pc_times(sde, presets, forward_s: dict[int, float], n_list: list[int], steps: int) -> tuple[dict, dict]:
    """PC seconds ``{preset: {n: s}}`` and NFE ``{preset: nfe}`` for each baseline (module docstring)."""
    pc_s, pc_nfe = {}, {}
    for preset in presets:
        p = pc_preset(preset)
        per_step = (1 if p.predictor != "none" else 0) + (p.n_steps if p.corrector != "none" else 0)
        pc_nfe[preset] = per_step * sde.N
        pc_s[preset] = {n: pc_seconds(n, forward_s, per_step, sde.N, _pc_step_seconds(sde, preset, n, steps)) for n in n_list}
    return pc_s, pc_nfe


def time_architecture(name: str, cfg: SpeedConfig = BENCH) -> dict:
    """Time one architecture (``"ncsnpp_deep"`` or ``"ddpmpp_deep"``): forwards, PC baselines, the FP pipeline.

    Returns a plain dict: parameter counts (ours and score_sde's), forward seconds per timed batch, PC
    and FP times, the ratio rows of :func:`speed_rows`, the config, and the wall time of each phase.
    """
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    build, kind, presets = ARCHITECTURES[name]
    t0 = time.perf_counter()
    net = build()
    sde = VESDE() if kind == "ve" else VPSDE()
    t1 = time.perf_counter()
    forward_s = {b: time_forward(net, b, c, cfg.seed) for b, c in zip(cfg.forward_batches, cfg.forward_calls)}
    t2 = time.perf_counter()
    n_list = sorted(set(cfg.images) | {cfg.group})
    pc_s, pc_nfe = _pc_times(sde, presets, forward_s, n_list, cfg.overhead_steps)
    t3 = time.perf_counter()
    fp = _fp_times(net, sde, cfg, forward_s, n_list)
    wall = {"build": t1 - t0, "forwards": t2 - t1, "pc_steps": t3 - t2, "fp": time.perf_counter() - t3}
    return {"network": net.name, "architecture": name, "sde": kind, "parameters": count_parameters(net),
            "paper_parameters": PAPER_PARAMETERS[name], "forward_s": forward_s, "pc_s": pc_s, "pc_nfe": pc_nfe, "fp": fp,
            "rows": speed_rows(kind, pc_s, fp["setup_s"], fp["sampling_s"], cfg.group), "config": to_dict(cfg),
            "wall_s": wall}


def _note(cfg: SpeedConfig) -> str:
    timed = ", ".join(f"{c} call(s) at batch {b}" for b, c in zip(cfg.forward_batches, cfg.forward_calls))
    return (f"Random weights (a forward pass costs the same whatever the weights), CPU, torch threads = "
            f"{torch.get_num_threads()}. Network forward timed on {timed}; PC = N x (NFE per step x forward at that "
            f"batch, scaled by the batch size from the largest timed batch below it, + the sampler's own step time): "
            f"extrapolated from those calls. FP: M = {cfg.M} references, L = {cfg.L}; the drift = M network evaluations "
            f"timed as M x per-image forward time; Gram, eigenpairs, prior projection and weights run for real; "
            f"{cfg.J_timed} of J = {cfg.J} Langevin steps run, scaled by J / {cfg.J_timed}. Paper (Table 1, Sec. 4.1): "
            f"261.6x = VE 1 image (75.85 s / 0.29 s), 119.8x = VP 1 image (35.93 / 0.30), 23.9x = VE 100 images "
            f"(381.32 / 15.97), 11.0x = VP 100 images (176.77 / 16.08), on an RTX 3090Ti; the paper does not say whether "
            f"its FP times include the set-up (its 1-image time is flat in M in Table 2, its 100-image time grows about "
            f"linearly with M).")


def speed_report(cfg: SpeedConfig = BENCH) -> dict:
    """Both architectures: parameter counts, forward times, ratio rows, and the note saying what was extrapolated."""
    archs = {name: time_architecture(name, cfg) for name in ARCHITECTURES}
    return {"architectures": archs, "note": _note(cfg)}


def _fp_label(cfg: SpeedConfig) -> str:
    return f"FP (M = {cfg.M}, L = {cfg.L}, J = {cfg.J})"


def deep_net_table1_rows(cfg: SpeedConfig = BOOK) -> list[dict]:
    """Table-1-style rows for the two deep networks (random weights): PC baselines and the FP pipeline.

    Each row: network, parameters, sampler, NFE, seconds per image for 1 and for 100 images without and
    with the FP set-up (PC has none), what each time includes, and how it was measured (``cfg``; the
    default :data:`BOOK` keeps it to about a minute on 2 cores: one forward at batch 1 and at batch 4,
    scaled to 100, and M = 500).
    """
    rows = []
    for name in ARCHITECTURES:
        r = time_architecture(name, cfg)
        common = {"network": r["network"], "parameters": r["parameters"], "sde": r["sde"]}
        for preset, times in r["pc_s"].items():
            nfe = r["pc_nfe"][preset]
            per = {f"s_per_image_{n}": times[n] / n for n in (1, 100)}
            rows.append({**common, "sampler": PC_LABELS[preset], "nfe": nfe, **per,
                         **{f"s_per_image_{n}_with_setup": per[f"s_per_image_{n}"] for n in (1, 100)},
                         "included": f"{nfe} network evaluations + the sampler's arithmetic"})
        fp = r["fp"]
        per = {f"s_per_image_{n}": fp["sampling_s"][n] / n for n in (1, 100)}
        rows.append({**common, "sampler": _fp_label(cfg), "nfe": cfg.M, **per,
                     **{f"s_per_image_{n}_with_setup": (fp["setup_s"] + fp["sampling_s"][n]) / n for n in (1, 100)},
                     "included": f"without set-up: {cfg.J} Langevin steps; with set-up: + {cfg.M} network evaluations "
                                 f"(drift), Gram matrices, eigenpairs, prior projection (one group for the images)"})
    for row in rows:
        row["measured"] = _note(cfg)
    return rows
