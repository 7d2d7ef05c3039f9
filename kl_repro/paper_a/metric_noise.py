"""The metric's own noise: one checkpoint scored several times with different sample seeds (Methods E).

A proxy FD_clf of 200 samples, or an energy distance of 1,000 points, is itself a random number: the
same model scores differently with other sampler seeds (and, for toy2d, another exact reference sample).
:func:`repeat_scores` scores the newest checkpoint (EMA) of one trained run ``repeats`` times at a
sample count; :func:`noise_summary` puts that spread next to the spread of the final scores over the
run's *training* seeds, so a reader sees which of the two noises the verdict intervals are made of.
Where the extractor gives features (FD_clf) the unbiased KID (Binkowski et al. 2018;
:func:`kl_repro.evaluation.distances.kernel_distance`) is reported beside the Fréchet distance: its
estimate has no bias in the sample count, which the Fréchet distance of 200 samples has.
Results are stored next to the run (``<run>/eval/metric-noise-<key>.json``) and reused.
"""

from __future__ import annotations

import numpy as np

from kl_repro.core import store
from kl_repro.core.config import config_hash, require
from kl_repro.evaluation.evaluate import EvalConfig
from kl_repro.evaluation.inception import sha256_file
from kl_repro.paper_a.evaluate import evaluate_model
from kl_repro.paper_a.matrix import EvalSpec, PlannedRun
from kl_repro.paper_a.run_hooks import energy_hook
from kl_repro.paper_a.training.run import Run

__all__ = ["repeat_scores", "noise_summary"]

EXTRACTOR = {"FD_clf": "clf", "FID": "inception-v3-compat"}
FIRST_SEED = 1000  # sample seeds 1000, 1001, ...: none of them is the curves' seed 0


def _score(net, run: Run, ev: EvalSpec, n: int, seed: int) -> dict:
    if ev.metric == "energy":
        out = energy_hook(n, seed)(run.config.train.steps, net, run)
        return {"seed": seed, "value": out["energy"], "kid": None}
    cfg = EvalConfig(num_samples=n, extractor=EXTRACTOR[ev.metric], ref_images=ev.ref_images, seed=seed, kid=True,
                     kid_subsets=50, kid_subset_size=min(n, 1000), batch_size=100)
    r = evaluate_model(net, run.config, cfg)
    return {"seed": seed, "value": r.value, "kid": r.kid_mean}


def repeat_scores(p: PlannedRun, ev: EvalSpec, n: int, repeats: int = 4) -> dict:
    """``repeats`` scores of the newest checkpoint of ``p`` with ``n`` samples each, sample seeds 1000, 1001, ...

    Returns ``{"run", "step", "metric", "num_samples", "scores": [{seed, value, kid}], "mean", "sd", "kid_sd"}``.
    """
    require(repeats >= 2, f"need at least 2 repeats to see a spread, got {repeats}")
    run = Run.open(p.run_dir)
    path, payload = run.latest_checkpoint()
    require(path is not None, f"{p.run_dir} has no checkpoint to score")
    step = int(payload["step"])
    del payload
    key = {"checkpoint_sha256": sha256_file(path), "step": step, "eval": ev.__dict__, "n": n, "repeats": repeats}
    out_path = run.dir / "eval" / f"metric-noise-{config_hash(key)}.json"
    if out_path.is_file() and store.read_json(out_path).get("key") == key:
        return store.read_json(out_path)["result"]
    net = run.load_model(ema=True)
    net.eval()
    scores = [_score(net, run, ev, n, FIRST_SEED + i) for i in range(repeats)]
    vals = np.array([s["value"] for s in scores])
    kids = [s["kid"] for s in scores if s["kid"] is not None]
    result = {"run": p.key, "step": step, "metric": ev.metric, "num_samples": n, "scores": scores,
              "mean": float(vals.mean()), "sd": float(vals.std(ddof=1)),
              "kid_mean": float(np.mean(kids)) if kids else None, "kid_sd": float(np.std(kids, ddof=1)) if kids else None}
    store.atomic_write_json(out_path, {"key": key, "result": result})
    return result


def noise_summary(noise: dict, seed_finals: list[float]) -> dict:
    """One row: the metric's own sd (``noise`` of :func:`repeat_scores`) beside the sd over training seeds."""
    seed_sd = float(np.std(seed_finals, ddof=1)) if len(seed_finals) >= 2 else None
    return {"run": noise["run"], "metric": noise["metric"], "samples": noise["num_samples"], "repeats": len(noise["scores"]),
            "metric mean": noise["mean"], "metric sd (same checkpoint)": noise["sd"],
            "metric sd / mean": noise["sd"] / noise["mean"] if noise["mean"] else None,
            "sd over training seeds (final)": seed_sd, "training seeds": len(seed_finals),
            "metric sd / seed sd": noise["sd"] / seed_sd if seed_sd else None,
            "KID mean": noise["kid_mean"], "KID sd": noise["kid_sd"]}
