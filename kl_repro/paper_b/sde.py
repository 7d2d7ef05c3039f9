"""VP and VE SDEs as in score_sde, score models, and denoising score matching.

Paper B, Sec. 2.1, eqs. (1)-(3), and ``fp_paper_spec.md`` sections 2 and 8 (Song et al. 2021,
``sde_lib.py``; CIFAR-10 defaults).  Continuous time ``t`` in [0, T], ``T = 1``, ``t = 0`` is data.

* **VP**: ``beta(t) = beta_min + t (beta_max - beta_min)``, ``f = -beta x / 2``, ``g = sqrt(beta)``;
  ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``, ``log alpha_t = -t^2 (beta_max - beta_min)/4 - t beta_min/2``,
  ``sigma_t^2 = 1 - alpha_t^2``; prior ``N(0, I)``; sampling epsilon 1e-3.
* **VE**: ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``f = 0``,
  ``g = sigma(t) sqrt(2 log(sigma_max / sigma_min))``; ``x_t | x_0 ~ N(x_0, sigma(t)^2 I)``;
  prior ``N(0, sigma_max^2 I)``; sampling epsilon 1e-5.

A *score model* is any callable ``score(x, t) -> (N, *shape)`` with ``x`` of shape ``(N, *shape)``,
``t`` of shape ``(N,)`` (or a float), and an attribute ``shape`` (the per-sample shape).  Provided here:
:class:`IdealScore` (the exact score of the perturbed empirical measure of a finite set, spec 8),
:class:`MixtureScore` (exact scores of isotropic Gaussian mixtures), :class:`NetScore` (a network with
score_sde's checkpoint conventions) and :func:`train_dsm` (continuous-time DSM, eq. (3)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

from kl_repro.core.config import Config, ConfigError, require

__all__ = [
    "VPSDE",
    "VESDE",
    "make_sde",
    "check_score_input",
    "IdealScore",
    "GaussianMixture",
    "MixtureScore",
    "NetScore",
    "ScoreMLP",
    "DSMConfig",
    "dsm_loss",
    "train_dsm",
]


def _tt(t, x: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of ``x``'s dtype/device with shape ``(N, 1, ..., 1)`` broadcasting against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class VPSDE(Config):
    """Variance-preserving SDE (score_sde ``VPSDE``; CIFAR-10 defaults)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000  # discretisation steps of the samplers (num_scales)
    T: float = 1.0
    eps: float = 1e-3  # sampling epsilon (run_lib.py)

    kind = "vp"

    def check(self) -> None:
        require(0 < self.beta_min <= self.beta_max, f"need 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")
        require(self.N >= 1, f"N must be >= 1, got {self.N}")
        require(0 < self.eps < self.T, f"need 0 < eps < T, got eps={self.eps}, T={self.T}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        """Signal scale ``alpha_t`` (float or tensor, like ``t``)."""
        return torch.exp(self.log_alpha(t)) if torch.is_tensor(t) else math.exp(self.log_alpha(t))

    def sigma(self, t):
        """Noise scale ``sigma_t = sqrt(1 - alpha_t^2)``."""
        if torch.is_tensor(t):
            return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))
        return math.sqrt(-math.expm1(2 * self.log_alpha(t)))

    def g2(self, t):
        """Squared diffusion ``g(t)^2 = beta(t)``."""
        return self.beta(t)

    def f(self, x: torch.Tensor, t) -> torch.Tensor:
        """Forward drift ``f(x, t) = -beta(t) x / 2``."""
        return -0.5 * self.beta(_tt(t, x)) * x

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``alpha_t x0`` and std ``sigma_t`` (broadcast shape) of ``x_t | x_0``."""
        tt = _tt(t, x0)
        return self.alpha(tt) * x0, self.sigma(tt)

    @property
    def prior_std(self) -> float:
        return 1.0

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Draws from the prior ``N(0, I)``."""
        return torch.randn(*shape, generator=generator, dtype=dtype)

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM discretisation ``(f, G)``: ``f = sqrt(1 - beta_i) x - x``, ``G = sqrt(beta_i)`` (score_sde)."""
        i = self.step_index(t, x)
        betas = torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64)[i].to(x)
        b = betas.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.sqrt(1.0 - b) * x - x, torch.sqrt(b)

    def corrector_alpha(self, t, x: torch.Tensor) -> torch.Tensor:
        """``alphas[timestep] = 1 - beta_i`` used by score_sde's Langevin corrector for VP, shape ``(N,)``."""
        i = self.step_index(t, x)
        return (1.0 - torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64)[i]).to(x)

    def step_index(self, t, x: torch.Tensor) -> torch.Tensor:
        """score_sde's ``timestep = (t (N - 1) / T).long()``, shape ``(N_batch,)``."""
        t = _tt(t, x).reshape(-1)
        return (t * (self.N - 1) / self.T).long()


@dataclass(frozen=True)
class VESDE(Config):
    """Variance-exploding SDE (score_sde ``VESDE``; CIFAR-10 defaults)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    T: float = 1.0
    eps: float = 1e-5  # sampling epsilon (run_lib.py)

    kind = "ve"

    def check(self) -> None:
        require(0 < self.sigma_min < self.sigma_max, f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        require(self.N >= 1, f"N must be >= 1, got {self.N}")
        require(0 < self.eps < self.T, f"need 0 < eps < T, got eps={self.eps}, T={self.T}")

    def alpha(self, t):
        return torch.ones_like(t) if torch.is_tensor(t) else 1.0

    def sigma(self, t):
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        r = self.sigma_max / self.sigma_min
        return self.sigma_min * (r**t if torch.is_tensor(t) else r ** float(t))

    def g2(self, t):
        """``g(t)^2 = sigma(t)^2 2 log(sigma_max / sigma_min)``."""
        return self.sigma(t) ** 2 * 2.0 * math.log(self.sigma_max / self.sigma_min)

    def f(self, x: torch.Tensor, t) -> torch.Tensor:
        return torch.zeros_like(x)

    def marginal(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        return x0, self.sigma(_tt(t, x0))

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Draws from the prior ``N(0, sigma_max^2 I)``."""
        return torch.randn(*shape, generator=generator, dtype=dtype) * self.sigma_max

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """SMLD discretisation: ``f = 0``, ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)`` with ``sigma_{-1} = 0``."""
        i = self.step_index(t, x)
        sig = torch.exp(torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N, dtype=torch.float64))
        s = sig[i]
        s_prev = torch.where(i == 0, torch.zeros_like(s), sig[(i - 1).clamp_min(0)])
        G = torch.sqrt(s**2 - s_prev**2).to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.zeros_like(x), G

    def corrector_alpha(self, t, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], dtype=x.dtype)

    def step_index(self, t, x: torch.Tensor) -> torch.Tensor:
        t = _tt(t, x).reshape(-1)
        return (t * (self.N - 1) / self.T).long()


def make_sde(kind: Literal["vp", "ve"], **kwargs) -> VPSDE | VESDE:
    """``VPSDE(**kwargs)`` or ``VESDE(**kwargs)`` by name."""
    if kind == "vp":
        return VPSDE(**kwargs)
    if kind == "ve":
        return VESDE(**kwargs)
    raise ConfigError(f"unknown SDE {kind!r}; choose 'vp' or 've'")


def check_score_input(score, x: torch.Tensor) -> None:
    """:class:`ConfigError` unless ``x`` is ``(N, *score.shape)`` (the data dimension matches the model)."""
    shape = tuple(getattr(score, "shape", ()))
    if tuple(x.shape[1:]) != shape:
        raise ConfigError(
            f"data of per-sample shape {tuple(x.shape[1:])} (d = {int(np.prod(x.shape[1:]))}) does not match "
            f"the score model's shape {shape} (d = {int(np.prod(shape)) if shape else 0})"
        )


class IdealScore:
    """Exact score of ``p_t`` for the empirical measure of ``data`` (spec section 8).

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
        tt = _tt(t, xf).reshape(-1)
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
    """Isotropic Gaussian mixture ``sum_k w_k N(mu_k, std^2 I)`` (the 2-D test problem of spec T5/E2)."""

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
            tt = _tt(t, x).reshape(-1, 1)
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
    """A network as a score model, with score_sde's continuous-checkpoint conventions (spec section 2).

    VP: ``score = -net(x, 999 t) / sigma_t`` (the net predicts the noise); VE:
    ``score = net(x, sigma(t)) / sigma(t)`` (``scale_by_sigma``).
    """

    def __init__(self, net: torch.nn.Module, sde: VPSDE | VESDE, shape: tuple[int, ...]):
        self.net, self.sde, self.shape = net, sde, tuple(shape)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        check_score_input(self, x)
        tt = _tt(t, x).reshape(-1)
        sigma = self.sde.sigma(tt).reshape(-1, *([1] * (x.ndim - 1)))
        if self.sde.kind == "vp":
            return -self.net(x, 999.0 * tt) / sigma
        return self.net(x, self.sde.sigma(tt)) / sigma


class ScoreMLP(torch.nn.Module):
    """Small MLP ``(x, label) -> (N, d)`` for low-dimensional data; the label enters as Fourier features of its log."""

    def __init__(self, d: int, hidden: int = 128, layers: int = 3, n_freq: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freq", torch.randn(n_freq, generator=g) * 4.0)
        dims = [d + 2 * n_freq] + [hidden] * layers
        mods: list[torch.nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.SiLU()]
        mods.append(torch.nn.Linear(hidden, d))
        self.body = torch.nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        c = torch.log(label.to(x.dtype)).reshape(-1, 1) / 4.0
        emb = torch.cat([torch.sin(c * self.freq), torch.cos(c * self.freq)], dim=1)
        return self.body(torch.cat([x, emb], dim=1))


@dataclass(frozen=True)
class DSMConfig(Config):
    """Continuous-time denoising score matching (paper B eq. (3); score_sde ``get_sde_loss_fn``)."""

    steps: int = 2000
    batch: int = 256
    lr: float = 2e-3
    hidden: int = 128
    layers: int = 3
    seed: int = 0

    def check(self) -> None:
        require(self.steps >= 1 and self.batch >= 1, f"steps and batch must be >= 1, got {self.steps}, {self.batch}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")


def dsm_loss(score: Callable, x0: torch.Tensor, sde: VPSDE | VESDE, generator: torch.Generator | None = None) -> torch.Tensor:
    """``E_t E_z ||s(x_t, t) sigma_t + z||^2`` with ``t ~ U(eps, T)`` (eq. (3), ``lambda(t) = sigma_t^2``)."""
    t = sde.eps + (sde.T - sde.eps) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    mean, std = sde.marginal(x0, t)
    s = score(mean + std * z, t)
    return ((s * std + z) ** 2).reshape(x0.shape[0], -1).sum(1).mean()


def train_dsm(data: torch.Tensor, sde: VPSDE | VESDE, cfg: DSMConfig = DSMConfig(), net: torch.nn.Module | None = None) -> tuple[NetScore, list[float]]:
    """Train a score network on ``data`` ``(n, *shape)`` by DSM; a :class:`ScoreMLP` unless ``net`` is given.

    Returns the score model and the loss per step.  Adam, constant learning rate, float32.
    """
    data = data.float()
    shape = tuple(data.shape[1:])
    torch.manual_seed(cfg.seed)
    net = net or ScoreMLP(int(np.prod(shape)), cfg.hidden, cfg.layers, seed=cfg.seed)
    model = NetScore(net, sde, shape)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.steps):
        idx = torch.randint(0, data.shape[0], (cfg.batch,), generator=g)
        loss = dsm_loss(model, data[idx], sde, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return model, losses
