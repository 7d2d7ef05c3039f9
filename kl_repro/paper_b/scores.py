"""Score models: exact scores (the references beside paper B's networks), and a network wrapper.

A *score model* is any callable ``score(x, t) -> (N, *shape)`` with ``x`` of shape ``(N, *shape)``,
``t`` of shape ``(N,)`` (or a float), and an attribute ``shape`` (the per-sample shape).

* :class:`IdealScore`: the exact score of the perturbed empirical measure of a finite set (a
  memorising model: the exact-score reference of the image experiments, beside the small network
  trained by DSM in :mod:`kl_repro.paper_b.trained_score`; the Deviations page);
* :class:`GaussianMixture` / :class:`MixtureScore`: exact scores of isotropic Gaussian mixtures
  (the 2-D problem of the checks in Methods B.5);
* :class:`NetScore`: a network with score_sde's continuous-checkpoint conventions (Methods B.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from kl_repro.core.config import Config, ConfigError, require
from kl_repro.paper_b.sde import VESDE, VPSDE, time_column

__all__ = ["check_score_input", "IdealScore", "GaussianMixture", "MixtureScore", "NetScore"]


def check_score_input(score, x: torch.Tensor) -> None:
    """:class:`ConfigError` unless ``x`` is ``(N, *score.shape)`` (the data dimension matches the model)."""
    shape = tuple(getattr(score, "shape", ()))
    if tuple(x.shape[1:]) != shape:
        raise ConfigError(
            f"data of per-sample shape {tuple(x.shape[1:])} (d = {int(np.prod(x.shape[1:]))}) does not match "
            f"the score model's shape {shape} (d = {int(np.prod(shape)) if shape else 0})"
        )


class IdealScore:
    """Exact score of ``p_t`` for the empirical measure of ``data``.

    ``s(x, t) = sum_i softmax_i(-||x - alpha_t x_i||^2 / (2 sigma_t^2)) (alpha_t x_i - x) / sigma_t^2``.
    A memorising model: its reverse SDE reproduces training points.  ``data``: ``(n, *shape)`` in the
    model's scale.  Cost per call ``O(N n d)`` (GEMMs, in chunks of ``chunk`` inputs).
    """

    def __init__(self, data: torch.Tensor, sde: VPSDE | VESDE, chunk: int = 512):
        if data.ndim < 2 or data.shape[0] < 1:
            raise ConfigError(f"data must be (n, *shape) with n >= 1, got {tuple(data.shape)}")
        self.shape = tuple(data.shape[1:])
        self.sde = sde
        self.flat = data.reshape(data.shape[0], -1)
        self.sq = (self.flat.double() ** 2).sum(1)
        self.chunk = chunk

    def _posterior(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_score_input(self, x)
        xf = x.reshape(x.shape[0], -1)
        tt = time_column(t, xf).reshape(-1)
        alpha = self.sde.alpha(tt).reshape(-1, 1)
        sigma = self.sde.sigma(tt).reshape(-1, 1)
        data = self.flat.to(xf.dtype)
        means = torch.empty_like(xf)
        for s in range(0, xf.shape[0], self.chunk):
            xs, a, sg = xf[s : s + self.chunk], alpha[s : s + self.chunk], sigma[s : s + self.chunk]
            # -||x - a x_i||^2 / 2 s^2 up to terms constant in i: (2 a x.x_i - a^2 ||x_i||^2) / 2 s^2
            logits = (2 * a * (xs @ data.T) - a**2 * self.sq.to(xs.dtype)[None, :]) / (2 * sg**2)
            means[s : s + self.chunk] = torch.softmax(logits, dim=1) @ data
        return xf, alpha, sigma, means

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """Posterior mean ``E[x_0 | x_t = x]`` (Tweedie), shape of ``x``."""
        _, _, _, means = self._posterior(x, t)
        return means.reshape(x.shape)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        xf, alpha, sigma, means = self._posterior(x, t)
        return ((alpha * means - xf) / sigma**2).reshape(x.shape)


@dataclass(frozen=True)
class GaussianMixture(Config):
    """Isotropic Gaussian mixture ``sum_k w_k N(mu_k, std^2 I)`` (the 2-D test problem of Methods B.5, checks T5 and E2)."""

    means: tuple[tuple[float, ...], ...] = ((-2.0, 0.0), (2.0, 0.0), (0.0, 2.0))
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    std: float = 0.3

    def check(self) -> None:
        require(len(self.means) >= 1 and len(self.means) == len(self.weights), "need one weight per mean")
        require(len({len(m) for m in self.means}) == 1, "all means must have the same dimension")
        require(all(w > 0 for w in self.weights), f"weights must be > 0, got {self.weights}")
        require(self.std > 0, f"std must be > 0, got {self.std}")

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def _params(self, dtype=torch.float64):
        mu = torch.tensor(self.means, dtype=dtype)
        w = torch.tensor(self.weights, dtype=dtype)
        return mu, w / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws ``(n, dim)`` and their component labels ``(n,)``."""
        mu, w = self._params(dtype)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        return mu[k] + self.std * torch.randn(n, self.dim, generator=generator, dtype=dtype), k

    def _comp(self, x: torch.Tensor, t, sde):
        mu, w = self._params(x.dtype)
        if sde is None:
            a, var = torch.ones(x.shape[0], 1, dtype=x.dtype), torch.full((x.shape[0], 1), self.std**2, dtype=x.dtype)
        else:
            tt = time_column(t, x).reshape(-1, 1)
            a = sde.alpha(tt)
            var = a**2 * self.std**2 + sde.sigma(tt) ** 2
        diff = a[:, :, None] * mu.T[None] - x[:, :, None]  # (N, dim, K)
        logp = torch.log(w)[None] - (diff**2).sum(1) / (2 * var) - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return diff, var, logp

    def log_prob(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """``log p_t(x)`` of the mixture pushed through ``sde`` to time ``t`` (``t=None``: ``p_0``), ``(N,)``."""
        _, _, logp = self._comp(x, t, sde)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """Exact ``grad log p_t(x)``: components ``N(alpha mu_k, (alpha^2 std^2 + sigma^2) I)``, ``(N, dim)``."""
        diff, var, logp = self._comp(x, t, sde)
        r = torch.softmax(logp, dim=1)  # responsibilities (N, K)
        return (diff * r[:, None, :]).sum(-1) / var

    def component_of(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest mean for each point ``(N,)`` (mode assignment of samples)."""
        mu, _ = self._params(x.dtype)
        return torch.cdist(x, mu).argmin(1)


class MixtureScore:
    """The exact score of ``mixture`` under ``sde`` as a score model (``shape = (dim,)``)."""

    def __init__(self, mixture: GaussianMixture, sde: VPSDE | VESDE):
        self.mixture, self.sde = mixture, sde
        self.shape = (mixture.dim,)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_score_input(self, x)
        return self.mixture.score(x, t, self.sde)


class NetScore:
    """A network as a score model, with score_sde's continuous-checkpoint conventions (Methods B.1).

    VP: ``score = -net(x, 999 t) / sigma_t`` (the net predicts the added noise); VE:
    ``score = net(x, sigma(t)) / sigma(t)`` (``scale_by_sigma``).
    """

    def __init__(self, net: torch.nn.Module, sde: VPSDE | VESDE, shape: tuple[int, ...]):
        self.net, self.sde, self.shape = net, sde, tuple(shape)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_score_input(self, x)
        tt = time_column(t, x).reshape(-1)
        sigma = self.sde.sigma(tt).reshape(-1, *([1] * (x.ndim - 1)))
        if self.sde.kind == "vp":
            return -self.net(x, 999.0 * tt) / sigma
        return self.net(x, self.sde.sigma(tt)) / sigma
