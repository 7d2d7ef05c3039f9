"""The time a profile's paper-A matrix still needs, training and evaluation, and where each estimate comes from.

``kl-repro plan --profile P`` prints :func:`format_plan`; ``make reproduce`` logs the same total
(:mod:`kl_repro.pipeline.scheduler`).  A run's training time comes from, in this order:

1. ``measured``: the run's own mean step time (its last 50 logged steps), once it has started;
2. ``gpu-check``: the per-row costs ``make gpu-check`` measured on CUDA (``<results>/gpu_check.json``),
   for a profile with a cost model;
3. ``derived``: the profile's cost model ``[paper_a.cost]``: the network's FLOPs per row (counted with
   ``torch.utils.flop_counter``) over an assumed sustained rate, plus a fixed overhead per step;
4. ``profile``: the row's ``est_s_per_step`` (a step time measured on, or scaled to, the profile's machine).

A cost model also prices the evaluation: every proxy-curve point and final number is ``n`` DDIM samples
(``S`` network passes per image, ``d`` rows per pass for a KL model: Paper A, eq. (24)) plus their
Inception features, and each data set's reference statistics once.  Costs scale with the image's pixel
count from the model's resolution.  ``[plan]`` adds the notebooks' own time (``notebooks_h``, with its source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kl_repro.core import store
from kl_repro.core.config import Config, require
from kl_repro.core.profiles import Profile
from kl_repro.paper_a.matrix import EvalSpec, PlannedRun, load_matrix, planned_runs
from kl_repro.paper_a.training.config import RunConfig

__all__ = ["GPU_CHECK_FILE", "CostModel", "cost_model", "network_rows", "plan_rows", "plan_totals", "format_plan"]

GPU_CHECK_FILE = "gpu_check.json"  # written under the results root by `make gpu-check` (bench/gpu_check.py)
_DEFAULT_REF_IMAGES = 50_000  # reference images assumed when an EvalSpec gives none (CIFAR-10's training split)


@dataclass(frozen=True)
class CostModel(Config):
    """Seconds of device work per unit at ``resolution`` x ``resolution`` pixels (fp16 on the GPU)."""

    kind: str  # "gpu-check" (measured) or "derived" (from FLOPs and an assumed rate)
    device: str  # the machine the numbers are for
    source: str  # how they were obtained, in one sentence
    step_overhead_s: float  # per optimiser step, whatever its batch (AdamW, EMA, kernel launches)
    s_per_image_step: float  # one network row, forward and backward
    s_per_forward: float  # one network row, forward only (one DDIM step of one baseline image)
    s_per_feature: float  # Inception features of one image (generated or reference)
    resolution: int = 32

    def check(self) -> None:
        require(self.kind in ("gpu-check", "derived"), f"kind must be 'gpu-check' or 'derived', got {self.kind!r}")
        require(min(self.step_overhead_s, self.s_per_image_step, self.s_per_forward, self.s_per_feature) >= 0,
                "costs must be >= 0")
        require(self.resolution >= 1, f"resolution must be >= 1, got {self.resolution}")

    @classmethod
    def derived(cls, sec: dict) -> "CostModel":
        """The model of a profile's ``[paper_a.cost]``: GFLOP per row over ``tflops`` (assumed sustained rate)."""
        rate = float(sec["tflops"]) * 1e12
        return cls(kind="derived", device=str(sec["device"]), source=str(sec["source"]),
                   step_overhead_s=float(sec["step_overhead_s"]), s_per_image_step=float(sec["gflop_per_image_step"]) * 1e9 / rate,
                   s_per_forward=float(sec["gflop_per_forward"]) * 1e9 / rate,
                   s_per_feature=float(sec["gflop_per_feature"]) * 1e9 / rate, resolution=int(sec.get("resolution", 32)))


def _gpu_check_model() -> CostModel | None:
    """The costs measured by ``make gpu-check`` on CUDA, if ``<results>/gpu_check.json`` holds them."""
    path = store.results_root() / GPU_CHECK_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    cm = data.get("cost_model") if data.get("cuda") else None
    return CostModel(kind="gpu-check", **cm) if isinstance(cm, dict) else None


def cost_model(profile: Profile) -> CostModel | None:
    """The profile's cost model (None without ``[paper_a.cost]``); a ``make gpu-check`` measurement replaces the derived one."""
    sec = profile.get("paper_a", {}).get("cost")
    if not sec:
        return None
    return _gpu_check_model() or CostModel.derived(sec)


def network_rows(cfg: RunConfig) -> tuple[int, int]:
    """Network rows per optimiser step and per sampled image and DDIM step.

    Training: ``B`` (baseline, KL*: one pass, Paper A eq. (25)), ``B * d`` (KL, eq. (19)), ``B * d'`` (partial, eq. (20)).
    Sampling: ``d`` rows per image for KL and partial KL (eq. (24)), one otherwise.
    """
    diff, B = cfg.diffusion, cfg.train.B
    if diff.model == "kl":
        return B * diff.d, diff.d
    if diff.model == "kl_partial":
        return B * diff.d_prime, diff.d
    return B, 1


def _pixels(cfg: RunConfig, cm: CostModel) -> float:
    return (cfg.data.res / cm.resolution) ** 2 if cfg.data.res else 1.0


def _train_estimate(p: PlannedRun, status: str, cm: CostModel | None) -> tuple[float | None, str]:
    """Seconds of training left and the source tag (module docstring)."""
    if status in ("finished", "evaluate"):
        return 0.0, "-"
    done = p.progress_step()
    if done:
        return p.estimate_s(), "measured"
    if cm is not None:
        rows, _ = network_rows(p.config)
        per_step = cm.step_overhead_s + rows * cm.s_per_image_step * _pixels(p.config, cm)
        return per_step * p.steps, cm.kind
    if p.spec.est_s_per_step is not None:
        return p.spec.est_s_per_step * p.steps, "profile"
    return None, "unknown"


def _sample_cost(p: PlannedRun, n: int, metric: str, cm: CostModel) -> float:
    """Seconds for ``n`` DDIM samples of the run and, unless the metric needs none, their features."""
    _, rows = network_rows(p.config)
    sampling = n * p.config.sampler.S * rows * cm.s_per_forward * _pixels(p.config, cm)
    return sampling + (0.0 if metric == "energy" else n * cm.s_per_feature)


def _eval_points(p: PlannedRun, status: str) -> int:
    """Proxy-curve points still to score: every ``eval_every`` steps, the last step, step 0 when asked."""
    if status in ("finished", "evaluate") or not p.spec.evaluate:
        return 0
    every, done = p.config.train.eval_every, p.progress_step()
    marks = set(range(every, p.steps + 1, every)) if every else set()
    marks.add(p.steps)
    return len([s for s in marks if s > done]) + int(p.spec.step0_eval and done == 0)


def _eval_estimate(p: PlannedRun, status: str, ev: EvalSpec | None, cm: CostModel | None) -> float | None:
    """Seconds of evaluation left (proxy points and final numbers); None without a cost model."""
    if cm is None:
        return None
    if ev is None or not p.spec.evaluate or status == "finished":
        return 0.0
    s = _eval_points(p, status) * _sample_cost(p, ev.proxy_samples, ev.metric, cm)
    s += _sample_cost(p, ev.final_samples, ev.metric, cm)
    if ev.final_metric is not None:
        s += _sample_cost(p, ev.final_metric_samples or ev.final_samples, ev.final_metric, cm)
    return s


def plan_rows(profile: Profile) -> list[dict]:
    """One row per planned run: status, steps, hours of training and of evaluation left, the training estimate's source."""
    m, cm = load_matrix(profile), cost_model(profile)
    rows = []
    for p in planned_runs(profile):
        status = p.status()
        train_s, source = _train_estimate(p, status, cm)
        eval_s = _eval_estimate(p, status, m.evals.get(p.spec.data), cm)
        rows.append({"run": p.key, "label": p.spec.label, "status": status, "steps": p.steps, "seeds": len(p.spec.seeds),
                     "train_h": None if train_s is None else train_s / 3600, "eval_h": None if eval_s is None else eval_s / 3600,
                     "source": source, "artefacts": tuple(p.spec.artefacts)})
    return rows


def _reference_h(profile: Profile, cm: CostModel | None) -> float:
    """Hours of reference statistics (features of the real images), once per data set that is scored with features."""
    if cm is None:
        return 0.0
    evals = load_matrix(profile).evals
    n = sum(ev.ref_images or _DEFAULT_REF_IMAGES for ev in evals.values() if ev.metric != "energy")
    return n * cm.s_per_feature / 3600


def plan_totals(profile: Profile, rows: list[dict] | None = None) -> dict:
    """Hours left in all (training, evaluation, reference statistics, notebooks) and the cost model behind them."""
    rows = plan_rows(profile) if rows is None else rows
    cm = cost_model(profile)
    extra = profile.get("plan", {})
    train = sum(r["train_h"] or 0.0 for r in rows)
    evaluation = sum(r["eval_h"] or 0.0 for r in rows)
    ref = _reference_h(profile, cm) if any(r["status"] != "finished" for r in rows) else 0.0
    notebooks = float(extra.get("notebooks_h", 0.0))
    return {"train_h": train, "eval_h": evaluation, "reference_h": ref, "notebooks_h": notebooks,
            "total_h": train + evaluation + ref + notebooks, "unknown": sum(r["train_h"] is None for r in rows),
            "cost_model": cm, "notebooks_source": extra.get("notebooks_source")}


def _h(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f} h"


_SOURCES = {"measured": "this run's own last 50 logged steps", "profile": "est_s_per_step of the profile's run row",
            "unknown": "no estimate (no est_s_per_step, no cost model)", "-": "nothing left to train"}


def _source_lines(profile: Profile, rows: list[dict], cm: CostModel | None) -> list[str]:
    """What each source tag in the table means, for the tags that occur."""
    out = ["estimates (the `source` column):"]
    for tag in dict.fromkeys(r["source"] for r in rows):
        text = _SOURCES.get(tag) or f"{'measured by make gpu-check on' if tag == 'gpu-check' else 'derived for'} {cm.device}: {cm.source}"
        out.append(f"  {tag:9s} {text}")
    if cm is not None:
        out.append(f"  evaluation: {cm.kind} costs on {cm.device}: {cm.s_per_forward * 1e3:.3f} ms per network row of a "
                   f"DDIM step, {cm.s_per_feature * 1e3:.3f} ms per image of Inception features ({cm.resolution}x{cm.resolution}, "
                   f"scaled by pixel count); overhead {cm.step_overhead_s * 1e3:.0f} ms and "
                   f"{cm.s_per_image_step * 1e3:.3f} ms per network row per training step")
    else:
        out.append(f"  evaluation: not estimated (profile '{profile.name}' has no [paper_a.cost] cost model)")
    return out


def format_plan(profile: Profile) -> str:
    """The plan as printed by ``kl-repro plan``: one line per run, per-artefact hours, the total and every estimate's source."""
    rows = plan_rows(profile)
    tot = plan_totals(profile, rows)
    cm = tot["cost_model"]
    lines = [f"{'status':9s} {'run':36s} {'label':18s} {'steps':>7s} {'train':>9s} {'eval':>9s}  source"]
    lines += [f"{r['status']:9s} {r['run']:36s} {r['label']:18s} {r['steps']:>7d} {_h(r['train_h']):>9s} "
              f"{_h(r['eval_h']):>9s}  {r['source']}" for r in rows]
    per_artefact: dict[str, float] = {}
    for r in rows:
        for a in r["artefacts"]:
            per_artefact[a] = per_artefact.get(a, 0.0) + (r["train_h"] or 0.0) + (r["eval_h"] or 0.0)
    unit = "GPU-hours" if cm is not None else "hours"
    lines.append(f"\nper table/figure, {unit} of training and evaluation (runs may be shared):")
    lines += [f"  {a:16s} {h:8.1f} h" for a, h in sorted(per_artefact.items())]
    lines.append("")
    lines += _source_lines(profile, rows, cm)
    if tot["notebooks_h"]:
        lines.append(f"  notebooks: {tot['notebooks_h']:.1f} h ({tot['notebooks_source'] or 'the profile'})")
    unknown = f"; {tot['unknown']} run(s) without an estimate" if tot["unknown"] else ""
    if cm is None:
        lines.append(f"\ntotal left: {tot['total_h']:.1f} hours of training (one worker; evaluation not estimated){unknown}")
    else:
        lines.append(f"\ntotal left: {tot['total_h']:.1f} {unit} (one worker): training {tot['train_h']:.1f} h, evaluation "
                     f"{tot['eval_h']:.1f} h, reference statistics {tot['reference_h']:.2f} h, notebooks {tot['notebooks_h']:.1f} h{unknown}")
    return "\n".join(lines)
