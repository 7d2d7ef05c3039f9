"""Distances between two sets of features: Fréchet distance, KID and the energy distance (Methods E).

* Fréchet distance (Heusel et al. 2017), of Gaussians fitted to the features:
  ``||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)``; it is "FID" only on Inception
  pool3 features.
* KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, averaged over
  random subsets, with torch-fidelity's defaults so numbers are comparable.
* Energy distance (Székely and Rizzo): for 2-D points, where image features do not apply.

Features are arrays ``(N, D)``; everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kl_repro.core.config import Config, require

__all__ = ["gaussian_stats", "frechet_distance", "energy_distance", "KIDConfig", "kernel_distance"]


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, float64) of features ``(N, D)``, N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    require(f.ndim == 2 and f.shape[0] >= 2, f"need features (N >= 2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_eigvals_floor(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off (|w| below D eps max w) set to 0 before a square root."""
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root ``(D, D)`` of a PSD matrix, by its eigendecomposition."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(_psd_eigvals_floor(w))) @ v.T


def energy_distance(x, y) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two point sets ``(n, D)``, ``(m, D)``.

    Székely and Rizzo's statistic (V-statistic form): zero exactly when the two empirical laws coincide,
    and a metric between distributions (unlike a Fréchet distance of fitted Gaussians, it sees every mode).
    Used for 2-D data (``toy2d``), where Inception-style features do not apply.
    """
    x = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(len(y), -1)
    require(x.shape[1] == y.shape[1] and len(x) >= 2 and len(y) >= 2,
            f"energy_distance needs two sets of >= 2 points of the same dimension, got {tuple(x.shape)} and {tuple(y.shape)}")
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

    ``tr (sigma1 sigma2)^1/2`` is computed as the trace of the square root of the symmetric PSD
    matrix ``s sigma2 s`` with ``s = sigma1^1/2``, which stays real and stable when the covariances
    are singular (fewer samples than feature dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    require(mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == mu1.shape * 2,
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    s1 = _sqrtm_psd(sigma1)
    m = s1 @ sigma2 @ s1
    tr_covmean = np.sqrt(_psd_eigvals_floor(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


@dataclass(frozen=True)
class KIDConfig(Config):
    """Kernel distance settings; defaults are torch-fidelity's (and Binkowski et al.'s) KID settings."""

    subsets: int = 100
    subset_size: int = 1000  # capped at the smaller set's size; the size used is reported
    degree: int = 3  # polynomial kernel (x.y / D + coef0)^degree
    coef0: float = 1.0
    seed: int = 2020  # torch-fidelity's default rng seed, so numbers are comparable

    def check(self) -> None:
        require(self.subsets >= 1, f"subsets must be >= 1, got {self.subsets}")
        require(self.subset_size >= 2, f"subset_size must be >= 2, got {self.subset_size}")
        require(self.degree >= 1, f"degree must be >= 1, got {self.degree}")


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, coef0: float) -> float:
    """Unbiased MMD^2 of two equal-size sets ``(m, D)`` under the polynomial kernel (diagonals excluded)."""
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    off = lambda k: k.sum() - np.trace(k)  # noqa: E731  (diagonal excluded: unbiased estimate)
    return float((off(kxx) + off(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kernel_distance(features1, features2, cfg: KIDConfig = KIDConfig()) -> dict[str, float]:
    """KID: mean and std over ``cfg.subsets`` random subsets of the unbiased MMD^2 (Binkowski et al. 2018).

    Subsets of ``min(cfg.subset_size, N1, N2)`` rows are drawn without replacement, alternately from
    each set, with ``numpy.random.RandomState(cfg.seed)``.  Returns ``mean``, ``std``, ``subset_size``.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    require(f1.ndim == f2.ndim == 2 and f1.shape[1] == f2.shape[1], f"mismatched features {f1.shape} vs {f2.shape}")
    size = min(cfg.subset_size, len(f1), len(f2))
    require(size >= 2, f"KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.RandomState(cfg.seed)
    vals = np.empty(cfg.subsets)
    for i in range(cfg.subsets):
        a = f1[rng.choice(len(f1), size, replace=False)]
        b = f2[rng.choice(len(f2), size, replace=False)]
        vals[i] = _mmd2_unbiased(a, b, cfg.degree, cfg.coef0)
    return {"mean": float(vals.mean()), "std": float(vals.std()), "subset_size": size}
