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
from kl_repro.evaluation.distances import KIDConfig, frechet_distance, gaussian_stats
from kl_repro.evaluation.evaluate import default_extractor, evaluate_images
from kl_repro.evaluation.features import build_extractor, check_extractor_name, extract_features
from kl_repro.evaluation.reference import ReferenceConfig, reference_stats
from kl_repro.paper_b.fp_config import FPConfig
from kl_repro.paper_b.fp_operator import fit_density
from kl_repro.paper_b.groups import group_references, sample_groups
from kl_repro.paper_b.image_data import ImageSetup, to_library
from kl_repro.paper_b.inits import initial_points
from kl_repro.paper_b.langevin import run_chains
from kl_repro.paper_b.memorisation import memorisation_report
from kl_repro.paper_b.pc import pc_preset, pc_sample

__all__ = ["FrechetSpec", "resample_indices", "bootstrap_frechet", "boot_interval", "fp_run", "pc_run", "fp_group_times", "timed", "mean_pairwise",
           "diversity"]

LEVEL = 0.95  # confidence level of every bootstrap interval


@dataclass(frozen=True)
class FrechetSpec(Config):
    """How samples are scored: the data set's training split as reference, an extractor (Methods E).

    ``extractor=None``: the data set's default (``clf`` for ``digits``, whose metric is FD_clf;
    Inception, i.e. FID, for the others).  ``reference_images``: the first N training images (None: all).
    ``n_boot``: bootstrap resamples of the samples behind each distance (0: none), for the intervals of
    the verdicts (:func:`bootstrap_frechet`).
    """

    dataset: str = "digits"
    extractor: str | None = None
    reference_images: int | None = None
    n_boot: int = 200

    def check(self) -> None:
        require(self.reference_images is None or self.reference_images >= 2, "reference_images must be None or >= 2")
        require(self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}")
        if self.extractor is not None:
            check_extractor_name(self.extractor)

    @property
    def reference(self) -> ReferenceConfig:
        return ReferenceConfig(dataset=self.dataset, split="train", num_images=self.reference_images)

    def __call__(self, images: torch.Tensor, sampler: str, group_size: int | None = None) -> dict | None:
        """Frechet distance (and KID) of library ``images`` as a dict (metric name under ``"metric"``); None for < 10 images.

        With ``n_boot``, ``"boot"`` holds the distance of each bootstrap resample (``(n_boot,)``, seeded) and
        ``"boot_std"`` their standard deviation: the sampling noise of the metric at this sample count.
        ``group_size``: the images come in groups of this size that share random draws (an FP group's
        references and density), resampled as clusters (:func:`resample_indices`).
        """
        if len(images) < 10:
            return None
        extractor = self.extractor or default_extractor(self.dataset)
        res = evaluate_images(images, self.reference, sampler, extractor=extractor, kid=KIDConfig()).as_dict()  # KID subset capped, reported
        if self.n_boot:
            res["boot"] = bootstrap_frechet(images, self, self.n_boot, group_size=group_size)
            res["boot_std"] = float(np.std(res["boot"]))
        return res


def resample_indices(n: int, b: int, seed: int = 0, group_size: int | None = None) -> np.ndarray:
    """Bootstrap resample ``b`` of ``n`` items (``default_rng((seed, b))``), ``(n,)``.

    Without ``group_size``: ``n`` draws with replacement.  With it (items in consecutive groups that share
    random draws, e.g. the FP sampler's groups): a two-stage cluster bootstrap, groups drawn with
    replacement, then items within each drawn group, so the between-group variance is in the resamples.
    Two sets of the same size and grouping get the same indices (paired resampling, for common random numbers).
    """
    rng = np.random.default_rng((seed, b))
    if not group_size or group_size >= n or n % group_size:
        return rng.integers(0, n, n)
    g = n // group_size
    return (rng.integers(0, g, g)[:, None] * group_size + rng.integers(0, group_size, (g, group_size))).reshape(-1)


def bootstrap_frechet(images: torch.Tensor, how: FrechetSpec, n_boot: int, seed: int = 0, group_size: int | None = None) -> np.ndarray:
    """The Frechet distance of ``n_boot`` resamples (:func:`resample_indices`, same size) of ``images``, ``(n_boot,)``.

    Features are extracted once.  Sets drawn with common random numbers (Table 3's rows) are resampled in
    pairs; for unrelated sets the pairing is immaterial.
    """
    extractor = build_extractor(how.extractor or default_extractor(how.dataset), how.reference)
    stats = reference_stats(how.reference, extractor)
    feats = extract_features(extractor, images)["features"]
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = resample_indices(len(feats), b, seed, group_size)
        out[b] = frechet_distance(*gaussian_stats(feats[idx]), stats.mu, stats.sigma)
    return out


def boot_interval(boot_a: np.ndarray, boot_b: np.ndarray | None = None, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``boot_a`` (or of ``boot_a - boot_b``, resamples of two independent sets)."""
    d = np.asarray(boot_a) - (0.0 if boot_b is None else np.asarray(boot_b))
    a = (1 - level) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


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


def diversity(x: torch.Tensor, n_boot: int = 200, seed: int = 0, group_size: int | None = None) -> dict:
    """Mean pairwise distance of ``x`` ``(n, ...)`` and of ``n_boot`` resamples (:func:`resample_indices`; pairs of one
    image with itself left out).  Returns ``{"mean_pairwise": float, "boot": (n_boot,)}``."""
    f = x.reshape(x.shape[0], -1).double()
    D = torch.cdist(f, f).numpy()
    n = len(f)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        idx = resample_indices(n, b, seed, group_size)
        sub = D[np.ix_(idx, idx)]
        keep = idx[:, None] != idx[None, :]
        boot[b] = sub[keep].mean() if keep.any() else 0.0
    return {"mean_pairwise": mean_pairwise(x), "boot": boot}
