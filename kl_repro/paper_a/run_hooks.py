"""Scoring the runs of paper A's matrix: the proxy-metric hook during training, step 0 and the final numbers.

A data set's :class:`~kl_repro.paper_a.matrix.EvalSpec` says how its runs are scored: ``FD_clf`` or
``FID`` (Fréchet distances, Methods E; :mod:`kl_repro.paper_a.evaluate`) on DDIM samples of the EMA
model, or for ``toy2d`` the energy distance to exact samples of the mixture.  :func:`eval_hooks` gives
the training hook (:func:`kl_repro.paper_a.training.loop.train` calls it every ``eval_every`` steps),
:func:`step0_evaluation` scores a fine-tuning run's initial model (Table 3's step 0; Methods A.7) and
:func:`final_evaluation` the finished model, stored in ``<run>/final.json`` and reused.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from kl_repro.core import store
from kl_repro.data import Toy2D, derive_seed, generator
from kl_repro.evaluation.distances import energy_distance
from kl_repro.evaluation.evaluate import EvalConfig
from kl_repro.paper_a.ddim import ddim_sample
from kl_repro.paper_a.evaluate import describe_sampler, evaluate_run, proxy_hook
from kl_repro.paper_a.matrix import EvalSpec, PlannedRun
from kl_repro.paper_a.training.run import Run, build_model, init_from_baseline

__all__ = ["energy_hook", "eval_hooks", "step0_evaluation", "final_evaluation"]

_EXTRACTOR = {"FD_clf": "clf", "FID": "inception-v3-compat"}


def energy_hook(n: int, seed: int = 0) -> Callable:
    """Training hook: energy distance between ``n`` DDIM samples (fixed seeds) and ``n`` exact toy2d samples."""
    ref = Toy2D().sample(n, generator("toy2d-reference", seed))

    def energy(step, model_ema, run) -> dict:
        cfg = run.config
        x = ddim_sample(model_ema, cfg.diffusion, cfg.sampler, n, seed, min(n, 1000), (2,),
                        device=next(model_ema.parameters()).device)
        return {"energy": energy_distance(x.cpu(), ref), "num_samples": n,
                "sampler": describe_sampler(cfg.sampler, seed), "reference": f"{n} exact toy2d samples"}

    return energy


def _metric_cfg(ev: EvalSpec, metric: str, n: int) -> EvalConfig:
    """The :class:`EvalConfig` of ``n`` samples scored with ``metric`` (no KID: the matrix reports Fréchet distances)."""
    return EvalConfig(num_samples=n, extractor=_EXTRACTOR[metric], ref_images=ev.ref_images, seed=ev.seed, kid=False,
                      batch_size=100)


def eval_hooks(p: PlannedRun, ev: EvalSpec) -> list:
    """The proxy-metric hook of a planned run (empty for cost-only runs)."""
    if not p.spec.evaluate:
        return []
    if ev.metric == "energy":
        return [energy_hook(ev.proxy_samples, ev.seed)]
    return [proxy_hook(_metric_cfg(ev, ev.metric, ev.proxy_samples), data=p.config.data)]


def step0_evaluation(p: PlannedRun, ev: EvalSpec) -> None:
    """Score the initial (fine-tuned-from-baseline) model and log it as the run's step-0 evaluation."""
    cfg = p.config
    run = Run.create(cfg, p.run_dir.parent)
    if any(r.get("step") == 0 for r in run.metrics("eval")) or run.latest_checkpoint()[0] is not None:
        return
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))  # the same initial weights as the training loop's
    model = build_model(cfg)
    if cfg.init_from is not None:
        init_from_baseline(model, cfg)
    model.eval()
    for hook in eval_hooks(p, ev):
        out = hook(0, model, run)
        if out:
            with open(run.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"kind": "eval", "step": 0, "hook": getattr(hook, "__name__", "hook"), **out},
                                   sort_keys=True) + "\n")


def _fd_result(run: Run, ev: EvalSpec, progress: bool) -> dict[str, Any]:
    """The Fréchet-distance numbers of a finished run: ``ev.metric`` and, if set, ``ev.final_metric`` under ``second``."""
    r = evaluate_run(run.dir, cfg=_metric_cfg(ev, ev.metric, ev.final_samples), progress=progress)
    result = {"metric": r.metric, "value": r.value, "num_samples": r.num_samples, "extractor": r.extractor,
              "sampler": r.sampler, "reference": r.reference}
    if ev.final_metric is not None:
        r2 = evaluate_run(run.dir, cfg=_metric_cfg(ev, ev.final_metric, ev.final_metric_samples or ev.final_samples),
                          progress=progress)
        result["second"] = {"metric": r2.metric, "value": r2.value, "num_samples": r2.num_samples,
                            "extractor": r2.extractor, "sampler": r2.sampler}
    return result


def final_evaluation(p: PlannedRun, ev: EvalSpec, progress: bool = False) -> dict:
    """The run's final numbers (EMA model, newest checkpoint), stored in ``<run>/final.json`` and reused."""
    run = Run.open(p.run_dir)
    path = run.dir / "final.json"
    key = {"eval": ev.__dict__, "steps": run.config.train.steps}
    if path.exists():
        stored = store.read_json(path)
        if stored.get("key") == json.loads(json.dumps(key)):
            return stored["result"]
    result: dict[str, Any] = {"step": run.config.train.steps}
    if ev.metric == "energy":
        net = run.load_model(ema=True)
        result.update(energy_hook(ev.final_samples, ev.seed)(run.config.train.steps, net, run))
        result["metric"] = "energy"
        result["value"] = result["energy"]
    else:
        result.update(_fd_result(run, ev, progress))
    store.atomic_write_json(path, {"key": key, "result": result})
    return result
