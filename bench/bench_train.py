"""Benchmark of paper A's training step on this machine (not a test; ``make bench`` or run this file).

Everything is measured side by side in one run, in interleaved rounds, as ratios of medians:

1. **Step cost at equal B** (images per optimiser step): KL-8d, KL-10d1, KL-10d4 and KL*-8d against the
   baseline (paper A Table 2 on a GPU: 3.03x, 1.06x, 2.30x, KL* about 1x).  Targets: KL* <= 1.05x,
   KL-10d1 <= 1.10x, KL-d no worse than d x on a CPU.  On a small U-Net (16x16 digits) and, for the
   one-evaluation-per-image models, on the paper's ``Unet(dim=64, dim_mults=(1,2,4,8))`` at 32x32.
2. **Batched vs looped basis terms**: the one-pass ``B*d`` evaluation of the KL loss against a Python
   loop over ``k`` (paper A: "instead of looping d times"), whole optimiser step.
3. **Against the reference trainer**: our baseline step against ``denoising_diffusion_pytorch``'s
   ``GaussianDiffusion`` loss (``pred_noise``, linear schedule) + backward + clip + AdamW + EMA, same U-Net and batch.
4. **Hardware use**: FLOPs of a step (``torch.utils.flop_counter``) over its time, against this
   machine's measured 1024^2 fp32 matmul rate; peak memory of each step.
5. **Fast paths** (config fields): ``train.threads`` (1 against torch's default), ``net.channels_last``,
   ``train.mixed_precision='bf16'``, ``train.fused_adamw``, ``train.compile`` (on request:
   ``KL_REPRO_BENCH_COMPILE=1``, it compiles for minutes), ``train.tf32`` (CUDA only), and the fraction
   of a step spent producing its batch (data loading must never starve the step).

The step measured is :class:`TrainStep`: the loop body of ``kl_repro.paper_a.training.loop._train`` on the objects that
function builds (``build_model``, ``build_loss``, AdamW, ``ema_pytorch.EMA``, ``accelerate``'s autocast),
for a single process.  One real ``train()`` run cross-checks it (``loop_overhead``).

    .venv/bin/python bench/bench_train.py [--quick]
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PeakMemory, device, load_average, matmul_1024, rounds, timed  # noqa: E402

SMALL_NET = dict(dim=16, dim_mults=(1, 2, 4, 8), attn_heads=2, attn_dim_head=16)  # the paper's shape, 1/4 of its width
PAPER_NET = dict(dim=64, dim_mults=(1, 2, 4, 8))  # lucidrains defaults for attention: 4 heads of 32
MODELS = {  # name -> DiffusionConfig fields; "d" is the number of network evaluations per image
    "baseline": dict(model="baseline"),
    "KL-8d": dict(model="kl", d=8),
    "KL-10d1": dict(model="kl_partial", d=10, d_prime=1),
    "KL-10d4": dict(model="kl_partial", d=10, d_prime=4),
    "KL*-8d": dict(model="kl_star", d=8),
}
EVALS_PER_IMAGE = {"baseline": 1, "KL-8d": 8, "KL-10d1": 1, "KL-10d4": 4, "KL*-8d": 1}
PAPER_TABLE2 = {"KL-8d": 3.03, "KL-10d1": 1.06, "KL-10d4": 2.30, "KL*-8d": 1.0}  # GPU; KL*: "about the baseline's"


def run_config(model: str, net: dict, resolution: int | None, B: int, dataset: str = "digits", **fast):
    """The :class:`RunConfig` of one benchmarked model (fast-path fields in ``fast``: net.channels_last, train.*)."""
    from kl_repro.data import DataConfig
    from kl_repro.paper_a.losses import DiffusionConfig
    from kl_repro.nets import NetConfig
    from kl_repro.paper_a.training.config import RunConfig, TrainConfig

    net_kw = dict(net, channels_last=fast.pop("channels_last", False))
    return RunConfig(data=DataConfig(name=dataset, resolution=resolution), net=NetConfig(**net_kw),
                     diffusion=DiffusionConfig(**MODELS[model]),
                     train=TrainConfig(B=B, steps=10**6, sample_every=0, n_grid_samples=0, **fast))


class TrainStep:
    """One optimiser step of ``kl_repro.paper_a.training.loop._train`` (single process, ``grad_accum = 1``) as a callable.

    Built like the loop builds it: seeded ``build_model``, AdamW, EMA, ``accelerate``'s model
    preparation (autocast for bf16/fp16), the TF32 switches and ``model.compile()`` when configured.
    ``step()`` produces the batch of the next step index (``batch_indices``, flips, ``dataset.batch``,
    per-step generators), evaluates the loss, checks it is finite, backpropagates (fp16: scaled),
    clips the gradient norm, steps AdamW and updates the EMA.  ``data_only()`` is the batch production alone.
    """

    def __init__(self, cfg, dataset, dev: torch.device, loss_fn=None):
        from ema_pytorch import EMA

        from kl_repro.data import derive_seed
        from kl_repro.paper_a.losses import build_loss
        from kl_repro.paper_a.training.run import build_model
        from kl_repro.paper_a.training.loop import _accelerator
        from kl_repro.paper_a.training.precision import amp_for

        self.cfg, self.tc, self.dataset, self.dev = cfg, cfg.train, dataset, dev
        tc = self.tc
        accelerator, self.mp = _accelerator(tc)
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tc.tf32, True
        torch.manual_seed(derive_seed(tc.seed, "init"))
        self.model = build_model(cfg).to(dev)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay,
                                           fused=tc.fused_adamw or None)
        self.ema = EMA(self.model, beta=tc.ema_beta, update_every=tc.ema_update_every, update_after_step=tc.ema_update_after_step,
                       inv_gamma=tc.ema_inv_gamma, power=tc.ema_power, include_online_model=False)
        if tc.compile:
            self.model.compile()
        self.amp = amp_for(self.mp, dev.type)  # fp16: the training loop's autocast + GradScaler (CUDA and CPU)
        self.amp.wrap_forward(self.model)
        self.model = accelerator.prepare_model(self.model)
        self.loss_fn = loss_fn or build_loss(cfg.diffusion)
        self.n = 0

    def _batch(self, step: int) -> torch.Tensor:
        from kl_repro.data import derive_seed, generator
        from kl_repro.paper_a.training.loop import batch_indices

        tc = self.tc
        torch.manual_seed(derive_seed(tc.seed, step, "global"))
        idx = batch_indices(step, tc.B, len(self.dataset), tc.seed)
        flips = torch.rand(tc.B, generator=generator(tc.seed, step, "flip")) < 0.5
        return self.dataset.batch(idx, flips).to(self.dev)

    def data_only(self) -> torch.Tensor:
        self.n += 1
        return self._batch(self.n)

    def step(self) -> float:
        from kl_repro.data import generator

        self.n += 1
        tc, opt = self.tc, self.optimizer
        x0 = self._batch(self.n)
        g = generator(tc.seed, self.n, 0, 0, device=self.dev if self.dev.type == "cuda" else "cpu")
        self.model.train()
        loss, _ = self.loss_fn(self.model, x0, g)
        value = float(loss.detach())
        if value != value or abs(value) == float("inf"):
            raise FloatingPointError(f"benchmark step {self.n}: loss {value}")
        self.amp.scale(loss).backward()
        self.amp.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad)
        self.amp.step(opt)
        opt.zero_grad(set_to_none=True)
        self.ema.update()
        return value

    def measured_step(self) -> float:
        """A step counted by ``FlopCounterMode`` (forward and backward: matmuls, convolutions, attention) inside
        :class:`PeakMemory`; sets ``flop``, ``peak_mb`` and ``extra_mb``.  Benchmarks use it as the warm-up step."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with PeakMemory(self.dev) as mem, counter:
            value = self.step()
        self.flop, self.peak_mb, self.extra_mb = counter.get_total_flops(), mem.peak_mb, mem.extra_mb
        return value

    def timed_step(self) -> float:
        """:meth:`measured_step` the first time (the untimed warm-up of :func:`rounds`), :meth:`step` after."""
        return self.step() if hasattr(self, "flop") else self.measured_step()


def _dataset(resolution: int | None, dataset: str = "digits"):
    from kl_repro.data import DataConfig, load_dataset

    return load_dataset(DataConfig(name=dataset, resolution=resolution))


def sign_test_p(wins: int, n: int) -> float:
    """One-sided binomial p-value of ``wins`` or more out of ``n`` fair coin flips."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def step_ratios(net: dict, resolution: int, B: int, groups: list[tuple[list[str], int]], dev,
                dataset: str = "digits") -> tuple[list[dict], float]:
    """Step time of each model and its paired ratio to the baseline's, with FLOP/s and peak memory.

    ``groups``: ``[(models, n_rounds)]``; each group runs in interleaved rounds together with the baseline and a
    1024^2 fp32 matmul (the machine's peak under the same load), so that cheap models get many rounds and
    expensive ones few.  FLOPs and peak memory come from each model's warm-up step.  Returns ``(rows, matmul FLOP/s)``.
    """
    data = _dataset(resolution, dataset)
    steps = {m: TrainStep(run_config(m, net, resolution, B, dataset), data, dev) for g, _ in groups for m in ["baseline", *g]}
    mm, mm_flop = matmul_1024(dev)
    rows, peaks = {}, []
    for models, n_rounds in groups:
        names = list(dict.fromkeys(["baseline", *models]))
        t = rounds({**{m: steps[m].timed_step for m in names}, "matmul": mm}, n_rounds, dev)
        peak = mm_flop / t.median("matmul")
        peaks.append(peak)
        for m in names:
            if m == "baseline" and m in rows:
                continue
            s = steps[m]
            rows[m] = {"model": m, "evals_per_image": EVALS_PER_IMAGE[m], "rounds": n_rounds, "step_s": round(t.median(m), 4),
                       "images_per_s": round(B / t.median(m), 2), "ratio": round(t.ratio(m, "baseline"), 3),
                       "paper_gpu": PAPER_TABLE2.get(m, 1.0), "gflop": round(s.flop / 1e9, 3),
                       "gflop_per_s": round(s.flop / t.median(m) / 1e9, 2), "of_matmul_peak": round(s.flop / t.median(m) / peak, 3),
                       "peak_mem_mb": round(s.peak_mb, 1), "step_extra_mem_mb": round(s.extra_mb, 1)}
    return list(rows.values()), statistics.median(peaks)


class LoopedKLLoss:
    """The KL loss (19) with its ``d`` evaluations as a Python loop over ``k`` (``d`` calls of ``B`` rows)."""

    def __init__(self, cfg):
        from kl_repro.paper_a.losses import KLLoss

        self.inner = KLLoss(cfg)

    def __call__(self, net, x0, generator, t_index=None):
        from kl_repro.paper_a.losses import _mse

        inner, d = self.inner, self.inner.cfg.d
        B = x0.shape[0]
        i, Z, E_i, x_t, eps_d = inner.noisy(x0, generator, t_index)
        tin = inner.tables(x0.device)["time_input"][i]
        out = torch.stack([net(x_t, tin, torch.full((B,), k, device=x0.device, dtype=torch.long)) for k in range(d)], 1)
        return _mse(out.sum(1), eps_d), {"n_eval": B * d, "t_index": i}


def batched_vs_looped(net: dict, resolution: int, B: int, d: int, n_rounds: int, dev) -> dict:
    """Whole-step time of the batched KL-``d`` loss against the looped one (same model, data and noise), and their agreement."""
    from kl_repro.data import generator
    from kl_repro.paper_a.losses import KLLoss

    data = _dataset(resolution)
    cfg = run_config("KL-8d", net, resolution, B)
    cfg = cfg.replace(diffusion=cfg.diffusion.replace(d=d))
    batched = TrainStep(cfg, data, dev)
    looped = TrainStep(cfg, data, dev, loss_fn=LoopedKLLoss(cfg.diffusion))
    x0 = data.batch(torch.arange(B)).to(dev)
    with torch.no_grad():  # the same loss value from the same draws (the U-Net has no cross-sample operations)
        batched.model.eval()
        a = float(KLLoss(cfg.diffusion)(batched.model, x0, generator(1))[0])
        b = float(LoopedKLLoss(cfg.diffusion)(batched.model, x0, generator(1))[0])
    t = rounds({"batched": batched.step, "looped": looped.step}, n_rounds, dev)
    return {"d": d, "B": B, "batched_step_s": round(t.median("batched"), 4), "looped_step_s": round(t.median("looped"), 4),
            "looped_over_batched": round(t.ratio("looped", "batched"), 3),
            "loss_rel_diff": float(f"{abs(a - b) / abs(a):.2e}")}


class ReferenceStep:
    """``denoising_diffusion_pytorch``'s own step with the same U-Net: ``GaussianDiffusion`` loss (``pred_noise``,
    linear betas, T = 1000) on images in [0, 1], backward, gradient clipping, AdamW and EMA as lucidrains' Trainer."""

    def __init__(self, ours: TrainStep):
        from denoising_diffusion_pytorch import GaussianDiffusion
        from ema_pytorch import EMA

        tc = ours.tc
        unet = copy.deepcopy(ours.model.backbone)  # same architecture and initial weights
        H = ours.cfg.data.res
        self.diffusion = GaussianDiffusion(unet, image_size=H, timesteps=1000, objective="pred_noise",
                                           beta_schedule="linear").to(ours.dev)
        self.optimizer = torch.optim.AdamW(self.diffusion.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay)
        self.ema = EMA(self.diffusion, beta=tc.ema_beta, update_every=tc.ema_update_every, update_after_step=tc.ema_update_after_step)
        self.ours, self.clip = ours, tc.clip_grad

    def step(self) -> float:
        x01 = (self.ours.data_only() + 1.0) / 2.0  # the same batch production; GaussianDiffusion normalises to [-1, 1]
        self.diffusion.train()
        loss = self.diffusion(x01)
        value = float(loss.detach())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update()
        return value


def against_reference(net: dict, resolution: int, B: int, n_rounds: int, dev) -> dict:
    data = _dataset(resolution)
    fp32 = dict(mixed_precision="no")  # lucidrains' Trainer defaults to fp32 (amp=False); on CUDA ours would be fp16
    ours = TrainStep(run_config("baseline", net, resolution, B, **fp32), data, dev)
    ref = ReferenceStep(TrainStep(run_config("baseline", net, resolution, B, **fp32), data, dev))
    fused = TrainStep(run_config("baseline", net, resolution, B, fused_adamw=True, **fp32), data, dev)
    t = rounds({"kl_repro": ours.step, "reference": ref.step, "kl_repro_fused_adamw": fused.step}, n_rounds, dev)
    ratios = sorted(x / y for x, y in zip(t["kl_repro"], t["reference"]))
    slower = sum(r > 1.0 for r in ratios)
    return {"B": B, "resolution": resolution, "rounds": n_rounds, "kl_repro_step_s": round(t.median("kl_repro"), 4),
            "reference_step_s": round(t.median("reference"), 4), "ours_over_reference": round(t.ratio("kl_repro", "reference"), 3),
            "ratio_quartiles": [round(ratios[len(ratios) // 4], 3), round(ratios[(3 * len(ratios)) // 4], 3)],
            "rounds_ours_slower": slower, "sign_test_p_ours_slower": round(sign_test_p(slower, len(ratios)), 4),
            "fused_adamw_over_reference": round(t.ratio("kl_repro_fused_adamw", "reference"), 3)}


FAST_PATHS = {  # name -> config fields (net.channels_last, train.*)
    "default": {},
    "channels_last": {"channels_last": True},
    "bf16": {"mixed_precision": "bf16"},
    "fused_adamw": {"fused_adamw": True},
    "channels_last+bf16": {"channels_last": True, "mixed_precision": "bf16"},
}


def fast_paths(net: dict, resolution: int, B: int, n_rounds: int, dev, models=("baseline", "KL-8d"),
               compile_too: bool = True, paths=tuple(FAST_PATHS)) -> dict:
    """Each fast path against the default step, per model, interleaved; plus the data-production fraction.

    Returns ``{"rows": [...], "notes": {...}}`` (data fractions, compile, TF32)."""
    data = _dataset(resolution)
    variants = {v: FAST_PATHS[v] for v in paths}
    if dev.type == "cuda":
        variants["tf32"] = {"tf32": True}
    out: dict = {"rows": [], "notes": {}}
    for model in models:
        steps = {v: TrainStep(run_config(model, net, resolution, B, **kw), data, dev) for v, kw in variants.items()}
        contenders = {v: s.step for v, s in steps.items()}
        contenders["data_only"] = steps["default"].data_only
        t = rounds(contenders, n_rounds, dev)
        for v in variants:
            out["rows"].append({"model": model, "path": v, "step_s": round(t.median(v), 4),
                                "speedup": round(t.ratio("default", v), 3)})
        out["notes"][f"batch_production_fraction_{model}"] = round(t.ratio("data_only", "default"), 4)
    if compile_too and os.environ.get("KL_REPRO_BENCH_COMPILE") == "1":  # minutes of compilation: on request only
        out["notes"]["compile"] = compile_path(net, resolution, B, max(3, n_rounds // 2), dev, data)
    elif compile_too:
        out["notes"]["compile"] = "not measured (compiling the U-Net step takes minutes on a CPU); KL_REPRO_BENCH_COMPILE=1 measures it"
    if dev.type != "cuda":
        out["notes"]["tf32"] = "CUDA only (no effect on CPU): not measured here"
    return out


def compile_path(net: dict, resolution: int, B: int, n_rounds: int, dev, data) -> dict:
    """``train.compile=True`` against eager, baseline: the first (compiling) step's time and the steady ratio."""
    eager = TrainStep(run_config("baseline", net, resolution, B), data, dev)
    compiled = TrainStep(run_config("baseline", net, resolution, B, compile=True), data, dev)
    try:
        first = timed(compiled.step, dev)
    except Exception as e:  # no C++ compiler, unsupported platform: report, do not fail the benchmark
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    t = rounds({"eager": eager.step, "compiled": compiled.step}, n_rounds, dev, warmup=2)
    return {"first_step_s": round(first, 2), "eager_step_s": round(t.median("eager"), 4),
            "compiled_step_s": round(t.median("compiled"), 4), "speedup": round(t.ratio("eager", "compiled"), 3)}


def loop_overhead(net: dict, resolution: int, B: int, steps: int, n_rounds: int, dev) -> dict:
    """Real ``train()`` runs of the baseline (median logged ``step_time_s``) against :class:`TrainStep`, alternated."""
    from kl_repro.paper_a.training.loop import train

    cfg = run_config("baseline", net, resolution, B)
    cfg = cfg.replace(train=cfg.train.replace(steps=steps, checkpoint_every=steps, eval_every=0,
                                              device="auto" if dev.type == "cuda" else "cpu"))
    data = _dataset(resolution)
    ratios, logged, bench = [], [], []
    for _ in range(n_rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = train(cfg, tmp, progress=False)
            logged.append(statistics.median(r["step_time_s"] for r in run.metrics()[1:]))
        bench.append(rounds({"s": TrainStep(cfg, data, dev).step}, steps - 1, dev).median("s"))
        ratios.append(logged[-1] / bench[-1])
    return {"train_loop_step_s": round(statistics.median(logged), 4), "bench_step_s": round(statistics.median(bench), 4),
            "loop_over_bench": round(statistics.median(ratios), 3)}


def threads_path(net: dict, resolution: int, B: int, n_rounds: int, dev) -> dict:
    """``train.threads``: the baseline step on one CPU thread against all of torch's default threads, interleaved."""
    n_all = torch.get_num_threads()
    step = TrainStep(run_config("baseline", net, resolution, B), _dataset(resolution), dev)

    def on(n):
        def f():
            old = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                step.step()
            finally:
                torch.set_num_threads(old)
        return f

    on(1)()  # warm-up on one thread; the all-threads step is slow on a busy machine, so few rounds and no warm-up
    t = rounds({"1": on(1), str(n_all): on(n_all)}, n_rounds, dev, warmup=0)
    return {"threads_default": n_all, "step_s_1_thread": round(t.median("1"), 4),
            f"step_s_{n_all}_threads": round(t.median(str(n_all)), 4), "one_thread_speedup": round(t.ratio(str(n_all), "1"), 3)}


def run(quick: bool = False, threads: int | None = 1) -> dict:
    """All measurements; ``quick`` shrinks rounds and sizes (checks the benchmark runs).

    ``threads``: torch CPU threads for every measurement (default 1: on a shared 2-core machine a
    second OpenMP thread waits on the other processes; ``threads_path`` measures it).  Ignored on CUDA.
    """
    dev = device()
    old_threads = torch.get_num_threads()
    cpu_threads = threads if (threads and dev.type == "cpu") else old_threads
    n_rounds = 3 if quick else 7
    B = 8 if quick else 16
    small = dict(SMALL_NET, dim=8, attn_dim_head=8) if quick else SMALL_NET
    res = 8 if quick else 16
    out: dict = {"device": str(dev), "torch_threads": cpu_threads, "load_average_start": load_average()}
    if dev.type == "cpu":
        out["threads"] = threads_path(small, res, B, 1 if quick else 3, dev)
    torch.set_num_threads(cpu_threads)
    try:
        out["small_net"] = {**small, "data": f"digits {res}x{res}", "B": B}
        rows, peak = step_ratios(small, res, B, [(["KL-10d1", "KL*-8d"], 3 * n_rounds), (["KL-8d", "KL-10d4"], n_rounds)], dev)
        out["matmul_1024_fp32_gflop_per_s"] = round(peak / 1e9, 1)
        out["step_ratios_small"] = rows
        r = {row["model"]: row["ratio"] for row in rows}
        out["targets"] = {
            "KL*-8d <= 1.05x baseline": r["KL*-8d"] <= 1.05,
            "KL-10d1 <= 1.10x baseline": r["KL-10d1"] <= 1.10,
            "KL-8d <= 8x baseline": r["KL-8d"] <= 8.0,
            "KL-10d4 <= 4x baseline": r["KL-10d4"] <= 4.0,
        }
        out["batched_vs_looped"] = batched_vs_looped(small, res, B, 8, n_rounds, dev)
        out["against_reference"] = against_reference(small, res, B, 3 * n_rounds, dev)
        ref = out["against_reference"]
        out["targets"]["not slower than the reference trainer (sign test p >= 0.05)"] = ref["sign_test_p_ours_slower"] >= 0.05
        fp = fast_paths(small, res, B, n_rounds, dev)
        out["fast_paths_small"], out["fast_paths_small_notes"] = fp["rows"], fp["notes"]
        out["loop_overhead"] = loop_overhead(small, res, B, 4 if quick else 16, 1 if quick else 3, dev)
        if not quick:  # the paper's U-Net (35.7 M parameters) at 32x32: the one-evaluation-per-image models
            out["paper_net"] = {**PAPER_NET, "data": "digits resized to 32x32 (1 channel)", "B": B,
                                "note": "KL-8d and KL-10d4 (8 and 4 evaluations per image) left out for time"}
            out["step_ratios_paper_net"], _ = step_ratios(PAPER_NET, 32, B, [(["KL-10d1", "KL*-8d"], 3)], dev)
            fp = fast_paths(PAPER_NET, 32, B, 2, dev, models=("baseline",), compile_too=False,
                            paths=("default", "channels_last", "bf16", "channels_last+bf16"))
            out["fast_paths_paper_net"], out["fast_paths_paper_net_notes"] = fp["rows"], fp["notes"]
    finally:
        torch.set_num_threads(old_threads)
    out["load_average_end"] = load_average()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2, default=str))
