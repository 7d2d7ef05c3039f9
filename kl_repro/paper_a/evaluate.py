"""Sample quality of paper A's models: DDIM samples of a trained run, scored by :mod:`kl_repro.evaluation`.

Paper A reports FID on 50k samples of DDIM with eta = 1, S = 20 (Sec. 6.2; Methods A.6 and E).  Here:

* :func:`ddim_blocks` draws a model's samples in blocks, image ``i`` the same whatever the block size;
* :func:`evaluate_model` scores them (:func:`kl_repro.evaluation.evaluate.evaluate_images`);
* :func:`proxy_hook` logs a cheap proxy during training (:data:`kl_repro.evaluation.evaluate.PROXY`);
* :func:`evaluate_run` gives the final number of a run folder, stored next to the run and reused.
"""

from __future__ import annotations

from typing import Callable, Iterator

from kl_repro.core.config import config_hash, require, to_dict
from kl_repro.core.store import atomic_write_json, read_json
from kl_repro.data import data_shape
from kl_repro.evaluation.evaluate import PROXY, EvalConfig, MetricResult, default_extractor, evaluate_images
from kl_repro.evaluation.features import build_extractor
from kl_repro.evaluation.inception import sha256_file
from kl_repro.evaluation.reference import reference_stats
from kl_repro.paper_a.ddim import ddim_sample
from kl_repro.paper_a.training.run import Run

__all__ = ["describe_sampler", "ddim_blocks", "evaluate_model", "proxy_hook", "evaluate_run"]


def describe_sampler(ddim_cfg, seed: int | None = None) -> str:
    """``"DDIM eta=1 S=20"`` plus deviations (no x0 clipping, initial noise) and the seed."""
    s = f"DDIM eta={ddim_cfg.eta:g} S={ddim_cfg.S}"
    if not ddim_cfg.clip_x0:
        s += " no-clip"
    if ddim_cfg.init_noise != "unit":
        s += f" init={ddim_cfg.init_noise}"
    return s if seed is None else f"{s}, seed {seed}"


def ddim_blocks(net, run_cfg, num_samples: int, seed: int, batch_size: int = 100, block: int = 10_000,
                device="cpu", progress: bool = False) -> Iterator:
    """DDIM samples of ``net`` under ``run_cfg`` (a RunConfig) in blocks of ``block`` images, float ``(n, C, H, W)``.

    Image ``i`` of the sample is image ``i`` of ``ddim_sample(..., seed)`` whatever the block size
    (blocks pass ``first_index``), so a 50k evaluation starts with the images of a 10k one.
    """
    shape = data_shape(run_cfg.data)
    for start in range(0, num_samples, block):
        n = min(block, num_samples - start)
        yield ddim_sample(net, run_cfg.diffusion, run_cfg.sampler, n, seed, min(batch_size, n), shape,
                          device=device, progress=progress, first_index=start)


def evaluate_model(net, run_cfg, cfg: EvalConfig = EvalConfig(), device=None, progress: bool = False) -> MetricResult:
    """Sample ``cfg.num_samples`` images from ``net`` with the run's DDIM sampler and evaluate them.

    ``run_cfg`` is the model's :class:`~kl_repro.paper_a.training.run.RunConfig`; the extractor defaults to
    :func:`~kl_repro.evaluation.evaluate.default_extractor` of its data set.  Sampling runs on the model's device.
    """
    ref = cfg.reference(run_cfg.data)  # ConfigError (toy2d, bad split) before any compute
    name = cfg.extractor or default_extractor(run_cfg.data.name)
    ext = build_extractor(name, ref, cfg.resolved_device())
    stats = reference_stats(ref, ext, cfg.batch_size, cfg.resolved_device(), progress)
    if device is None:
        device = next(net.parameters()).device
    blocks = ddim_blocks(net, run_cfg, cfg.num_samples, cfg.seed, cfg.batch_size, cfg.sample_block, device, progress)
    return evaluate_images(blocks, stats, describe_sampler(run_cfg.sampler, cfg.seed), ext, cfg.num_samples,
                           cfg.batch_size, cfg.kid_config() if cfg.kid else None, cfg.resolved_device(), progress)


def proxy_hook(cfg: EvalConfig = PROXY, data=None) -> Callable:
    """A training hook ``hook(step, model_ema, run) -> dict`` logging a proxy FID / FD_clf (fixed samples and seeds).

    Called by :func:`kl_repro.paper_a.training.loop.train` every ``eval_every`` steps (and at the end); ``cfg.every``
    thins that further.  Pass the run's ``data`` (DataConfig) to validate data set and extractor now,
    before training starts.  The dict holds the metric under its own name (``FID``, ``FD_clf``...), the
    kernel distance, and the sample count, extractor, sampler and reference it was measured with.
    """
    require(isinstance(cfg, EvalConfig), f"cfg must be an EvalConfig, got {type(cfg).__name__}")
    if data is not None:
        cfg.reference(data)
        default_extractor(data.name)

    def sample_quality(step: int, model_ema, run) -> dict | None:
        if cfg.every is not None and step % cfg.every:
            return None
        r = evaluate_model(model_ema, run.config, cfg)
        out = {r.metric: r.value, "num_samples": r.num_samples, "extractor": r.extractor, "sampler": r.sampler,
               "reference": r.reference}
        if r.kid_mean is not None:
            out[r.kid_metric] = r.kid_mean
        if r.is_mean is not None:
            out[r.is_metric] = r.is_mean
        return out

    return sample_quality


def evaluate_run(run_dir, num_samples: int | None = None, extractor: str | None = None,
                 cfg: EvalConfig = EvalConfig(), progress: bool = True, force: bool = False) -> MetricResult:
    """Final sample quality of the EMA model of the run in ``run_dir`` (newest good checkpoint).

    ``num_samples``/``extractor`` override ``cfg``.  The result is stored in
    ``<run_dir>/eval/<metric>-n<N>-step<step>-<key>.json``, keyed by the checkpoint's SHA-256, the
    evaluation settings and the extractor identity, and reused unless ``force``.
    """
    changes = {k: v for k, v in (("num_samples", num_samples), ("extractor", extractor)) if v is not None}
    cfg = cfg.replace(**changes) if changes else cfg
    run = Run.open(run_dir)
    ref = cfg.reference(run.config.data)  # bad data set / split: ConfigError before loading anything
    name = cfg.extractor or default_extractor(run.config.data.name)
    path, payload = run.latest_checkpoint()
    require(path is not None, f"{run.dir} has no usable checkpoint to evaluate")
    cfg = cfg.replace(device=cfg.resolved_device())  # "auto" -> the device used: the key names it
    ext = build_extractor(name, ref, cfg.device)
    key = {"checkpoint_sha256": sha256_file(path), "step": int(payload["step"]), "eval": to_dict(cfg.replace(extractor=name)),
           "extractor": ext.identity}
    out = run.dir / "eval" / f"{ext.fd_name}-n{cfg.num_samples}-step{payload['step']}-{config_hash(key)}.json"
    if out.is_file() and not force:
        stored = read_json(out)
        if stored.get("key") == key:
            return MetricResult.from_dict(stored["result"])
    del payload
    net = run.load_model(ema=True).to(cfg.device)
    result = evaluate_model(net, run.config, cfg.replace(extractor=name), progress=progress)
    atomic_write_json(out, {"key": key, "run": run.name, "step": key["step"], "result": result.as_dict()})
    return result
