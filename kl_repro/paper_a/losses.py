"""Training losses of paper A: baseline eq. (7), KL loss (19), partial KL loss (20), KL* loss (25).

Ren et al. 2025, Algorithm 1 (reconstructed; Methods A.2 and A.5).  Conventions:

* the training grid has ``T`` points; 0-based index ``i`` is the paper's ``t_{i+1} = (i + 1) / T``;
* the network sees ``time_input = 1000 t - 1`` (our choice, see the Deviations page): baseline step
  ``j`` of T = 1000 gets ``j``, KL grid point ``i`` of T = 20 gets ``50 (i + 1) - 1``;
* ``eps`` is always the network's noise prediction; the drawn noise is ``noise`` (baseline) and the
  KL noise (16) ``noise_d = sum_k E[i, k] Z_k`` with ``E[i, k] = e_k(t_i)`` and ``Z_k ~ N(0, I)``
  drawn once per image and shared by every ``k`` (our reading of Algorithm 1's lost note 1);
* ``B`` is the number of images; the ``d`` network evaluations of one image are ONE batched pass of
  ``B * d`` rows (Algorithm 1, note 2): the input is repeated with ``repeat_interleave`` and
  ``k = arange(d).repeat(B)``; no loop over ``k``.

Every loss is a callable ``loss(net, x0, generator, t_index=None) -> (loss, info)``: ``x0`` is
``(B, C, H, W)`` (or ``(B, D)``) in [-1, 1], ``generator`` a ``torch.Generator`` from which the
time indices, the noise and the partial-loss subsets are drawn in that order, and ``t_index``
optionally fixes the grid index of every sample.  :func:`eps_predictor` gives the aggregated noise
prediction (24) that DDIM sampling uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from kl_repro.core.config import Config, ConfigError, override, require
from kl_repro.paper_a import kl
from kl_repro.paper_a.forward_paths import kl_exact_coefficients
from kl_repro.schedule import VPSchedule, ddpm_linear_alpha_bar, time_input, training_grid

__all__ = [
    "DiffusionConfig",
    "Grid",
    "make_grid",
    "kl_noise",
    "batched_forward",
    "BaselineLoss",
    "KLLoss",
    "KLPartialLoss",
    "KLStarLoss",
    "build_loss",
    "eps_predictor",
]

KL_MODELS = ("kl", "kl_partial", "kl_star")


def _derived_defaults(model: str, d: int | None, T: int | None = None) -> dict[str, Any]:
    """What ``None`` resolves to for the dependent fields (our choices of grid and schedule; the Deviations page).

    The baseline at T = 1000 uses lucidrains' discrete linear schedule (what the paper ran); every
    other grid (KL models, the Baseline-T20 control) samples the continuous VP schedule at ``i / T``.
    """
    kl_model = model in KL_MODELS
    d = d if d is not None else (8 if kl_model else 1)
    T_default = 20 if kl_model else 1000
    T = T if isinstance(T, int) else T_default
    return {"d": d, "d_prime": d, "T": T_default, "schedule": "ddpm_linear" if not kl_model and T == 1000 else "vp"}


@dataclass(frozen=True)
class DiffusionConfig(Config):
    """The diffusion model trained: which loss, how many KL terms, which grid and schedule (paper A, Sec. 6.2).

    ``None`` fields are resolved at construction (so equal settings hash equally): ``d`` 8 for KL
    models ("KL-8d") and 1 for the baseline; ``d_prime`` = ``d``; ``T`` 20 for KL models and 1000
    for the baseline; ``schedule`` ``vp`` for KL models and ``ddpm_linear`` (lucidrains) for the
    baseline at T = 1000 (else ``vp``).  :meth:`replace` re-derives fields that were at their default when ``model``, ``d`` or ``T`` change.
    """

    model: Literal["baseline", "kl", "kl_partial", "kl_star"] = "kl"
    d: int | None = None  # number of KL terms ("KL-8d"); must be 1 for the baseline
    d_prime: int | None = None  # terms of the partial loss (20) ("KL-10d4" is d=10, d_prime=4)
    T: int | None = None  # training grid size (our reading, Deviations page): 1000 baseline, 20 KL
    schedule: Literal["ddpm_linear", "vp"] | None = None  # ddpm_linear: betas beta_min/T .. beta_max/T; vp: alpha(i/T)
    beta_min: float = VPSchedule.beta_min  # the VP linear beta (Methods A.1); equals DDPM 1e-4 .. 0.02 at T = 1000
    beta_max: float = VPSchedule.beta_max
    # Choices the paper leaves open; the defaults are our reading (Deviations page), the others ablations:
    kl_loss_form: Literal["sum", "per_term"] = "sum"  # (19): ||sum_k eps_k - sum_k e_k Z_k||^2, or per term
    partial_form: Literal["sum", "per_term"] = "sum"  # (20): group sum over the subset, or per term
    partial_subset: Literal["per_sample", "per_batch"] = "per_sample"  # one random d'-subset per image, or per batch
    kl_noise_norm: Literal["none", "unit"] = "none"  # unit: divide e_k by sqrt(v_d(t)) so the noise has unit variance
    kl_coeffs: Literal["approx", "exact"] = "approx"  # approx: e_k of (16); exact: b_k(t) / sigma_t of (12) by quadrature
    kl_star_variant: Literal["basis", "sum"] = "basis"  # (25): <e(t), Z*>, or the plain sum of the d groups
    chunk: int | None = None  # max rows per network call; bounds no-grad (sampling) memory; training: use grad_accum

    def __post_init__(self) -> None:
        if isinstance(self.model, str) and (self.d is None or isinstance(self.d, int)):
            for name, value in _derived_defaults(self.model, self.d, self.T).items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        super().__post_init__()

    def check(self) -> None:
        require(self.d >= 1, f"d (number of KL terms) must be >= 1, got {self.d}")
        require(self.T >= 1, f"T (training grid size) must be >= 1, got {self.T}")
        if self.model == "baseline":
            require(self.d == 1 and self.d_prime == 1, f"the baseline has no KL terms: d and d_prime must be 1 (or None), got d={self.d}, d_prime={self.d_prime}")
        require(1 <= self.d_prime <= self.d, f"d_prime must be in [1, d] = [1, {self.d}], got d_prime={self.d_prime}")
        if self.model != "kl_partial":
            require(self.d_prime == self.d, f"d_prime applies to model 'kl_partial' only; for {self.model!r} leave it None (got d_prime={self.d_prime}, d={self.d})")
        _ = self.vp_schedule  # VPSchedule refuses beta_min <= 0 and beta_min > beta_max
        if self.schedule == "ddpm_linear":
            require(self.T >= 2 and self.beta_max / self.T < 1.0,
                    f"schedule 'ddpm_linear' with T={self.T} has beta_T = beta_max/T = {self.beta_max / self.T:.3g} >= 1 "
                    "(alpha_bar_T = 0); use schedule='vp' for small T")
        require(self.chunk is None or self.chunk >= 1, f"chunk must be None or >= 1, got {self.chunk}")

    def replace(self, **changes: Any) -> "DiffusionConfig":
        """A copy with ``changes``; dependent fields still at their old default are re-derived when ``model``, ``d`` or ``T`` change."""
        if "model" in changes or "d" in changes or "T" in changes:
            was_default = _derived_defaults(self.model, self.d, self.T)  # d_prime -> d, T, schedule
            was_default["d"] = _derived_defaults(self.model, None)["d"]
            for name in ("d", "d_prime", "T", "schedule"):
                if name not in changes and getattr(self, name) == was_default[name]:
                    changes[name] = None
        return override(self, changes)

    @property
    def vp_schedule(self) -> VPSchedule:
        """The continuous VP schedule with this config's ``beta_min``, ``beta_max``."""
        return VPSchedule(self.beta_min, self.beta_max)

    @property
    def is_kl(self) -> bool:
        """Whether the model uses the truncated KL noise (16)."""
        return self.model in KL_MODELS

    @property
    def out_mult(self) -> int:
        """Output channels per data channel: ``d`` for KL* (one group per basis term), else 1."""
        return self.d if self.model == "kl_star" else 1

    @property
    def tag(self) -> str:
        """Readable model name in the paper's style: ``baseline``, ``kl-8d``, ``kl-10d4``, ``klstar-8d`` (+ ``-T<T>`` off default)."""
        if self.model == "baseline":
            base = "baseline"
        elif self.model == "kl_partial":
            base = f"kl-{self.d}d{self.d_prime}"
        else:
            base = f"{'klstar' if self.model == 'kl_star' else 'kl'}-{self.d}d"
        return base if self.T == _derived_defaults(self.model, self.d)["T"] else f"{base}-T{self.T}"


# --- the training grid ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """Schedule and basis on the training grid (float64 numpy; :meth:`tensors` casts them).

    ``alpha_bar``: ``(T,)``; ``time_input``: ``(T,)`` in 1000-step units; ``E``: ``(T, d)`` basis
    ``E[i, k] = e_{k+1}(t_i)`` (ones for the baseline).
    """

    T: int
    t: np.ndarray
    alpha_bar: np.ndarray
    time_input: np.ndarray
    E: np.ndarray

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``alpha``, ``sigma``, ``time_input``, ``E`` as float32 tensors on ``device``."""
        f = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        return {"alpha": f(np.sqrt(self.alpha_bar)), "sigma": f(np.sqrt(1.0 - self.alpha_bar)),
                "time_input": f(self.time_input), "E": f(self.E)}


def make_grid(cfg: DiffusionConfig) -> Grid:
    """The grid ``t_i = (i + 1) / T`` with ``alpha_bar`` from the configured schedule and the basis table."""
    T = cfg.T
    t = training_grid(T)
    if cfg.schedule == "ddpm_linear":  # lucidrains linear_beta_schedule: betas scaled by 1000/T
        alpha_bar = ddpm_linear_alpha_bar(T, cfg.beta_min / T, cfg.beta_max / T)
    else:
        alpha_bar = cfg.vp_schedule.alpha_bar(t)
    if not cfg.is_kl:
        E = np.ones((T, 1))
    elif cfg.kl_coeffs == "exact":  # eq. (12) by quadrature, shared with the path-smoothness chapter
        E = kl_exact_coefficients(t, cfg.d, cfg.vp_schedule) / cfg.vp_schedule.sigma(t)[:, None]
    else:
        E = kl.basis_table(T, cfg.d)
    if cfg.is_kl and cfg.kl_noise_norm == "unit":
        E = E / np.sqrt(np.sum(E**2, axis=1, keepdims=True))
    return Grid(T=T, t=t, alpha_bar=alpha_bar, time_input=time_input(t), E=E)


# --- shared pieces --------------------------------------------------------------------------------

def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` to ``(B, 1, ..., 1)`` matching ``like``'s rank."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def kl_noise(E_i: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """KL noise (16) ``noise_d = sum_k E_i[:, k] Z[:, k]``: ``E_i (B, d)``, ``Z (B, d, ...)`` -> ``(B, ...)``; variance ``v_d(t)``."""
    return torch.einsum("bk,bk...->b...", E_i, Z)


def batched_forward(net: Callable, x: torch.Tensor, time_in: torch.Tensor, k: torch.Tensor | None, chunk: int | None) -> torch.Tensor:
    """``net(x, time_in, k)`` on all rows, split into calls of at most ``chunk`` rows (no split when None)."""
    n = x.shape[0]
    if chunk is None or n <= chunk:
        return net(x, time_in, k)
    outs = [net(x[a:a + chunk], time_in[a:a + chunk], None if k is None else k[a:a + chunk]) for a in range(0, n, chunk)]
    return torch.cat(outs)


def _scale(E: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Per-term targets ``E[b, k] Z[b, k]``: ``E (B, m)``, ``Z (B, m, ...)`` -> ``(B, m, ...)``."""
    return E.reshape(*E.shape, *([1] * (Z.ndim - 2))) * Z


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).mean()


class _GridLoss:
    """Common state of the losses: config, grid tensors per device, time-index and noise drawing."""

    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.grid = make_grid(cfg)
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    def tables(self, device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._cache:
            self._cache[key] = self.grid.tensors(device)
        return self._cache[key]

    def draw_index(self, B: int, generator: torch.Generator, t_index: int | None, device) -> torch.Tensor:
        """Grid indices ``(B,)``: uniform on ``0..T-1`` or all equal to ``t_index``."""
        if t_index is None:
            return torch.randint(self.cfg.T, (B,), generator=generator, device=generator.device).to(device)
        if not (isinstance(t_index, (int, np.integer)) and 0 <= t_index < self.cfg.T):
            raise ConfigError(f"t_index must be an integer grid index in [0, {self.cfg.T - 1}], got {t_index!r}")
        return torch.full((B,), int(t_index), dtype=torch.long, device=device)

    @staticmethod
    def randn(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device).to(device=like.device, dtype=torch.float32)


class BaselineLoss(_GridLoss):
    """Paper A eq. (7): ``E ||eps_theta(sqrt(abar_i) x0 + sqrt(1 - abar_i) noise, i) - noise||^2``, uniform ``i`` (``pred_noise``)."""

    def __call__(self, net, x0, generator, t_index=None):
        B = x0.shape[0]
        tab = self.tables(x0.device)
        i = self.draw_index(B, generator, t_index, x0.device)
        noise = self.randn(x0.shape, generator, x0)
        x_t = _bcast(tab["alpha"][i], x0) * x0 + _bcast(tab["sigma"][i], x0) * noise
        eps = batched_forward(net, x_t, tab["time_input"][i], None, None)
        return _mse(eps, noise), {"n_eval": B, "t_index": i}


class KLLoss(_GridLoss):
    """Paper A eq. (19), the KL loss, with ``d`` evaluations per image in one ``B * d`` pass.

    ``sum`` form: ``||sum_k eps_theta(x_t, t_i, k) - sum_k e_k(t_i) Z_k||^2``;
    ``per_term`` form: mean over ``k`` of ``||eps_theta(x_t, t_i, k) - e_k(t_i) Z_k||^2``;
    ``x_t = alpha_i x0 + sigma_i sum_k e_k(t_i) Z_k`` (16).
    """

    def noisy(self, x0, generator, t_index):
        """Draw ``i`` then ``Z``; returns ``(i, Z (B, d, ...), E_i (B, d), x_t, noise_d)``."""
        B, d = x0.shape[0], self.cfg.d
        tab = self.tables(x0.device)
        i = self.draw_index(B, generator, t_index, x0.device)
        Z = self.randn((B, d, *x0.shape[1:]), generator, x0)
        E_i = tab["E"][i]
        noise_d = kl_noise(E_i, Z)
        x_t = _bcast(tab["alpha"][i], x0) * x0 + _bcast(tab["sigma"][i], x0) * noise_d
        return i, Z, E_i, x_t, noise_d

    def evaluate(self, net, x_t, i, ks: torch.Tensor) -> torch.Tensor:
        """``eps_theta(x_t, t_i, k)`` for every ``k`` in ``ks (B, m)``, one batched pass; returns ``(B, m, ...)``."""
        B, m = ks.shape
        tin = self.tables(x_t.device)["time_input"][i]
        out = batched_forward(net, x_t.repeat_interleave(m, 0), tin.repeat_interleave(m), ks.reshape(-1), None)
        return out.reshape(B, m, *x_t.shape[1:])

    def __call__(self, net, x0, generator, t_index=None):
        B, d = x0.shape[0], self.cfg.d
        i, Z, E_i, x_t, noise_d = self.noisy(x0, generator, t_index)
        ks = torch.arange(d, device=x0.device).repeat(B, 1)
        eps = self.evaluate(net, x_t, i, ks)
        if self.cfg.kl_loss_form == "sum":
            loss = _mse(eps.sum(1), noise_d)
        else:
            loss = _mse(eps, _scale(E_i, Z))
        return loss, {"n_eval": B * d, "t_index": i}


class KLPartialLoss(KLLoss):
    """Paper A eq. (20), the KL partial loss: a random ``d'``-subset ``S`` of the terms, only ``d'`` evaluations.

    The forward sample still uses all ``d`` terms.  ``sum`` form ``||sum_{k in S} eps_theta(x_t, t_i, k)
    - sum_{k in S} e_k Z_k||^2``; ``per_term`` form averages the per-term errors over ``S``.  With
    ``d' = d`` it equals (19).  ``E_S[(20)] >= (d'/d)^2 (19)``, eqs. (21)-(22).
    """

    def draw_subset(self, B: int, generator: torch.Generator, device) -> torch.Tensor:
        """``(B, d')`` distinct 0-based indices: one uniform subset per image (or one per batch)."""
        d, dp = self.cfg.d, self.cfg.d_prime
        if self.cfg.partial_subset == "per_sample":
            S = torch.rand((B, d), generator=generator, device=generator.device).argsort(dim=1)[:, :dp]
        else:
            S = torch.randperm(d, generator=generator, device=generator.device)[:dp].expand(B, dp)
        return S.to(device)

    def __call__(self, net, x0, generator, t_index=None):
        B, dp = x0.shape[0], self.cfg.d_prime
        i, Z, E_i, x_t, _ = self.noisy(x0, generator, t_index)
        S = self.draw_subset(B, generator, x0.device)
        E_S = E_i.gather(1, S)  # (B, d')
        Z_S = Z[torch.arange(B, device=x0.device)[:, None], S]  # (B, d', ...)
        eps = self.evaluate(net, x_t, i, S)
        if self.cfg.partial_form == "sum":
            loss = _mse(eps.sum(1), kl_noise(E_S, Z_S))
        else:
            loss = _mse(eps, _scale(E_S, Z_S))
        return loss, {"n_eval": B * dp, "t_index": i}


class KLStarLoss(KLLoss):
    """Paper A eq. (25), KL*: one pass of ``B`` rows; the last layer has ``d * C`` outputs ``Z*_k`` (channel ``k*C + c``).

    ``basis`` variant: ``||<e(t_i), Z*> - <e(t_i), Z>||^2``; ``sum`` variant: ``||sum_k Z*_k - noise_d||^2``.
    """

    def aggregate(self, out: torch.Tensor, E_i: torch.Tensor) -> torch.Tensor:
        """``(B, d*C, ...)`` network output to the noise prediction ``(B, C, ...)``."""
        B, d = out.shape[0], self.cfg.d
        groups = out.reshape(B, d, out.shape[1] // d, *out.shape[2:])
        return kl_noise(E_i, groups) if self.cfg.kl_star_variant == "basis" else groups.sum(1)

    def __call__(self, net, x0, generator, t_index=None):
        B = x0.shape[0]
        i, _, E_i, x_t, noise_d = self.noisy(x0, generator, t_index)
        tin = self.tables(x0.device)["time_input"][i]
        out = batched_forward(net, x_t, tin, None, None)
        return _mse(self.aggregate(out.float(), E_i), noise_d), {"n_eval": B, "t_index": i}


def build_loss(cfg: DiffusionConfig) -> Callable:
    """The loss callable of ``cfg.model``: ``loss(net, x0, generator, t_index=None) -> (loss, info)``."""
    return {"baseline": BaselineLoss, "kl": KLLoss, "kl_partial": KLPartialLoss, "kl_star": KLStarLoss}[cfg.model](cfg)


def eps_predictor(net: nn.Module, cfg: DiffusionConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Aggregated noise prediction at grid index ``i``: ``eps_hat(x, i) -> (B, ...)`` float32.

    Baseline: ``eps_theta(x, t_i)``.  KL and partial KL (all ``d`` terms at sampling): eq. (24),
    ``sum_k eps_theta(x, t_i, k)`` in one batched pass of ``B * d`` rows (split by ``cfg.chunk``).
    KL*: ``<e(t_i), Z*_theta(x, t_i)>`` (``basis``) or ``sum_k Z*_k`` (``sum``).  ``i``: int or long ``(B,)``.
    """
    helper = KLStarLoss(cfg) if cfg.model == "kl_star" else _GridLoss(cfg)

    def eps_hat(x: torch.Tensor, i) -> torch.Tensor:
        B = x.shape[0]
        tab = helper.tables(x.device)
        i = torch.as_tensor(i, dtype=torch.long, device=x.device)
        i = i.expand(B) if i.ndim == 0 else i
        tin = tab["time_input"][i]
        if cfg.model == "baseline":
            return batched_forward(net, x, tin, None, cfg.chunk).float()
        if cfg.model == "kl_star":
            return helper.aggregate(batched_forward(net, x, tin, None, cfg.chunk).float(), tab["E"][i])
        d = cfg.d
        k = torch.arange(d, device=x.device).repeat(B)
        out = batched_forward(net, x.repeat_interleave(d, 0), tin.repeat_interleave(d), k, cfg.chunk)
        return out.float().reshape(B, d, *x.shape[1:]).sum(1)

    return eps_hat
