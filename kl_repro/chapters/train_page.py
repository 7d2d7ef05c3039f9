"""The chapter module of ``notebooks/03_train.ipynb``: one training run of paper A, its loss curve and samples.

The notebook is executed once per run of the profile's matrix (:func:`kl_repro.paper_a.matrix.training_pages`)
and once with the profile's ``[notebooks.03_train]`` parameters; its parameters are the flat run
parameters of :class:`~kl_repro.paper_a.training.config.TrainParams` plus ``profile``, so the page and
the scheduler name the same run folder and a finished run is shown, not retrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from kl_repro.chapters.base import ChapterConfig
from kl_repro.core import plotting
from kl_repro.core.config import to_dict
from kl_repro.paper_a.training.config import RunConfig, TrainParams
from kl_repro.paper_a.training.loop import train
from kl_repro.paper_a.training.run import Run, runs_dir

__all__ = ["TrainPageConfig", "describe", "train_run", "run_summary", "training_figure", "figure_caption"]


@dataclass(frozen=True)
class TrainPageConfig(TrainParams, ChapterConfig):
    """``profile`` plus the flat parameters of one run, with :class:`TrainParams`'s defaults (the paper's settings)."""

    def check(self) -> None:
        ChapterConfig.check(self)
        TrainParams.check(self)

    def run_config(self, runs_dir: str | Path | None = None) -> RunConfig:
        """The run's :class:`RunConfig`; ``init_from`` given as a run's name is looked up in the profile's runs folder."""
        if runs_dir is None and self.init_from is not None:
            runs_dir = self.runs_dir
        return TrainParams.run_config(self, runs_dir)

    @property
    def runs_dir(self) -> Path:
        """``<results>/<profile>/runs``."""
        return runs_dir(self.profile_obj)


def _setting(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_setting(v) for v in value) + ")"
    return "none" if value is None else ("" if value == "" else str(value))


def describe(cfg: TrainPageConfig) -> str:
    """The resolved run configuration, one line per section (data, net, diffusion, train, sampler, ...),
    each as ``name = value`` pairs."""
    lines = []
    for section, values in to_dict(cfg.run_config()).items():
        if section == "init_from" and values:  # the pretrained run, by its folder's name (not a local path)
            values = f"run {Path(values).name}"
        text = (", ".join(f"{k} = {_setting(v)}" for k, v in values.items()) if isinstance(values, dict)
                else _setting(values))
        lines.append(f"{section}: {text or '(none)'}")
    return "\n".join(lines)


def train_run(cfg: TrainPageConfig) -> Run:
    """Train the run of ``cfg`` under the profile's runs folder, or reuse it when it has finished."""
    return train(cfg.run_config(), cfg.runs_dir, progress=False)


def run_summary(run: Run) -> str:
    """Parameters, device, precision, the loss from first to last step, optimisation time and median images/s."""
    rows, info = run.metrics(), run.info()
    text = (f"run {run.name}: {info.get('n_params', 0):,} parameters, device {info.get('device')}, "
            f"mixed precision {info.get('mixed_precision')}")
    if rows:
        text += (f"\n{len(rows)} steps, loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}; optimisation time "
                 f"{rows[-1]['opt_time_s']:.1f} s, median {sorted(r['images_per_s'] for r in rows)[len(rows) // 2]:.1f} images/s")
    return text


def _n_samples(run: Run) -> int:
    return run.config.train.n_grid_samples or 16


def _loss_panel(ax, run: Run) -> None:
    """Training loss per step (log scale) and, for long runs, a running mean over about 1/50 of the steps."""
    rows = run.metrics("train")
    if rows:
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        w = max(1, len(loss) // 50)
        ax.plot(steps, loss, lw=0.6 if w > 1 else 1.4, alpha=0.35 if w > 1 else 1.0, label="per step")
        if w > 1:
            ax.plot(steps[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), lw=1.6, label=f"mean of {w} steps")
        ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("training loss")
        ax.legend()
    ax.set_title(run.name, fontsize="small")


def training_figure(run: Run, seed: int = 0):
    """Loss curve beside DDIM samples of the EMA model (the run's sampler, per-image seeds from ``seed``); returns the figure.

    As many samples as the run's grids hold (16 when it draws none).
    """
    plotting.set_theme()
    n = _n_samples(run)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    _loss_panel(ax0, run)
    samples = run.sample(n, seed=seed)
    if samples.ndim == 4:
        plotting.show_grid(ax1, samples, title=f"{n} DDIM samples (eta={run.config.sampler.eta:g}, S={run.config.sampler.S}), EMA")
    else:
        ax1.scatter(samples[:, 0], samples[:, 1], s=4)
        ax1.set_title(f"{n} DDIM samples, EMA")
        ax1.set_aspect("equal")
    fig.tight_layout()
    return fig


def figure_caption(cfg: TrainPageConfig, run: Run, seed: int = 0) -> str:
    """The caption of :func:`training_figure`: profile, run, number of samples, seed and sampler."""
    return plotting.caption(cfg.profile, run=run.name, samples=_n_samples(run), seed=seed,
                            sampler=f"DDIM eta={run.config.sampler.eta:g} S={run.config.sampler.S}")
