"""Runs of both samplers on the image set-up, and the measurements every table shares.

The FP sampler (paper B, Algorithm 1) and PC (the baseline, Methods B.1) on the same ideal score;
samples come back as library images ``(N, C, H, W)`` in ``[-1, 1]`` with their memorisation report
(Methods B.4) and, where asked, the Frechet distance of Methods E (``FD_clf`` on digits, never "FID").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from kl_repro.core.config import Config, require
from kl_repro.evaluation.distances import KIDConfig
from kl_repro.evaluation.evaluate import default_extractor, evaluate_images
from kl_repro.evaluation.features import check_extractor_name
from kl_repro.evaluation.reference import ReferenceConfig
from kl_repro.paper_b.fp_config import FPConfig
from kl_repro.paper_b.fp_operator import fit_density
from kl_repro.paper_b.groups import group_references, sample_groups
from kl_repro.paper_b.image_data import ImageSetup, to_library
from kl_repro.paper_b.inits import initial_points
from kl_repro.paper_b.langevin import run_chains
from kl_repro.paper_b.memorisation import memorisation_report
from kl_repro.paper_b.pc import pc_preset, pc_sample

__all__ = ["FrechetSpec", "fp_run", "pc_run", "fp_group_times", "timed", "mean_pairwise"]


@dataclass(frozen=True)
class FrechetSpec(Config):
    """How samples are scored: the data set's training split as reference, an extractor (Methods E).

    ``extractor=None``: the data set's default (``clf`` for ``digits``, whose metric is FD_clf;
    Inception, i.e. FID, for the others).  ``reference_images``: the first N training images (None: all).
    """

    dataset: str = "digits"
    extractor: str | None = None
    reference_images: int | None = None

    def check(self) -> None:
        require(self.reference_images is None or self.reference_images >= 2, "reference_images must be None or >= 2")
        if self.extractor is not None:
            check_extractor_name(self.extractor)

    def __call__(self, images: torch.Tensor, sampler: str) -> dict | None:
        """Frechet distance (and KID) of library ``images`` as a dict (metric name under ``"metric"``); None for < 10 images."""
        if len(images) < 10:
            return None
        extractor = self.extractor or default_extractor(self.dataset)
        ref = ReferenceConfig(dataset=self.dataset, split="train", num_images=self.reference_images)
        res = evaluate_images(images, ref, sampler, extractor=extractor, kid=KIDConfig())  # KID subset capped, reported
        return res.as_dict()


def _operator_summary(groups, L: int) -> tuple[dict, np.ndarray | None]:
    """Group-averaged operator diagnostics and the top-``L`` eigenvalues per group (``(G, L)``, None without operator)."""
    reps = [r.density.report for r in groups]
    keys = ("n_eff_prior", "n_eff_refs", "n_eff_weights", "frac_negative_w", "r", "cluster_size", "max_im_over_re", "laplacian_shift")
    summary = {k: float(np.mean([rp[k] for rp in reps if k in rp])) for k in keys if any(k in rp for rp in reps)}
    lam = np.array([np.real(rp["top"][:L]) for rp in reps if "top" in rp]) if "top" in reps[0] else None
    return summary, lam


def fp_run(setup: ImageSetup, fcfg: FPConfig, n_groups: int, n_per_group: int) -> dict:
    """``n_groups`` groups of the FP sampler on the ideal score; samples as library images plus diagnostics."""
    kind = fcfg.sde
    out = sample_groups(setup.scores[kind], setup.sdes[kind], setup.pools[kind], fcfg, n_groups, n_per_group)
    images = to_library(out["samples"], kind, setup.shape)
    refs = [to_library(torch.as_tensor(r.density.refs), kind, setup.shape) for r in out["groups"]]
    mem = memorisation_report(images, setup.train_library(kind), refs)
    summary, lam = _operator_summary(out["groups"], fcfg.L)
    return {"images": images, "report": out["report"], "memorisation": mem, "operator": summary, "lam_top": lam,
            "t_setup_per_group": out["report"]["t_setup"] / n_groups, "t_sampling_per_group": out["report"]["t_sampling"] / n_groups,
            "groups": out["groups"], "x0": torch.cat([r.x0.reshape(r.x0.shape[0], -1) for r in out["groups"]])}


def pc_run(setup: ImageSetup, kind: str, preset: str, n: int, batch: int, seed: int) -> dict:
    """PC on the same ideal score, in batches of ``batch``; samples as library images, time per batch (s), NFE."""
    sde, score = setup.sdes[kind], setup.scores[kind]
    pcfg = pc_preset(preset)
    xs, times, nfe = [], [], 0
    for b in range(0, n, batch):
        g = torch.Generator().manual_seed(seed * 1000 + b)
        t0 = time.perf_counter()
        x, nfe = pc_sample(score, sde, min(batch, n - b), pcfg, g)
        times.append(time.perf_counter() - t0)
        xs.append(x)
    images = to_library(torch.cat(xs), kind, setup.shape)
    return {"images": images, "nfe": nfe, "t_batch": float(np.mean(times)), "batch": batch, "label": f"{pcfg.label}, N={sde.N}",
            "memorisation": memorisation_report(images, setup.train_library(kind))}


def fp_group_times(setup: ImageSetup, fcfg: FPConfig, n: int, group: int) -> dict:
    """Seconds of one FP group producing ``n`` images: set-up and sampling separately."""
    kind = fcfg.sde
    t0 = time.perf_counter()
    X, _, g = group_references(setup.pools[kind], setup.sdes[kind], fcfg, group)
    dens = fit_density(setup.scores[kind], setup.sdes[kind], X, fcfg, g)
    t_setup = time.perf_counter() - t0
    x0 = initial_points(fcfg, n, setup.shape, setup.pools[kind], g)
    _, _, t_sampling = run_chains(dens, x0, fcfg, g)
    return {"setup": t_setup, "sampling": t_sampling}


def timed(fn) -> float:
    """Seconds ``fn()`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mean_pairwise(x: torch.Tensor) -> float:
    """Mean Euclidean distance between distinct samples of ``x`` ``(n, ...)`` (a diversity measure)."""
    f = x.reshape(x.shape[0], -1).double()
    D = torch.cdist(f, f)
    n = len(f)
    return float(D.sum() / max(n * (n - 1), 1))
