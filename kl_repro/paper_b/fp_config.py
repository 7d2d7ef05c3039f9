"""Settings of the Fokker-Planck eigenfunction sampler, and its two presets.

Paper B, Sec. 3.2-3.3 and 4.1, Algorithm 1; Methods B.2-B.4.  Presets (:func:`fp_preset`): ``"paper"``
is literal wherever the paper is well-defined (the paper's coefficient rule (14), raw last iterate);
``"recommended"`` adds our corrections (biorthogonal coefficients, Tweedie output; the reasons are on
the Deviations page).  Every result records its preset and the full config.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from kl_repro.core.config import Config, ConfigError, require
from kl_repro.paper_b.gedmd import GRAM_RTOL
from kl_repro.paper_b.sde import VESDE, VPSDE, make_sde

__all__ = ["FPConfig", "PRESETS", "fp_preset", "fp_variant"]


@dataclass(frozen=True)
class FPConfig(Config):
    """Settings of the FP sampler; defaults are paper B's Sec. 4.1 (VE, CIFAR-10) with preset ``paper``.

    ``step_size`` is the Langevin step (the paper's epsilon in eq. (18)); the SDE's smallest sampling
    time is ``sde.sampling_eps``.  ``tau`` is the reverse duration ``T`` in ``e^{lam T}`` of eq. (15).
    """

    preset: Literal["paper", "recommended", "custom"] = "paper"  # recorded with every result
    sde: Literal["ve", "vp"] = "ve"
    M: int = 2000  # reference points per group
    L: int = 5  # eigenfunctions kept (eq. (15))
    zeta: float = 22.0  # gEDMD / prior-KDE bandwidth (eq. (22) of Sec. 4.1)
    zeta_s: float = 5.0  # sampling bandwidth in the Langevin score
    step_size: float = 0.5  # Langevin step (the paper's epsilon)
    J: int = 1000  # Langevin iterations
    eta: float = 0.2  # noise scale (Sec. 4.1; Algorithm 1 has eta = 1)
    n_per_group: int = 200  # images per group (250 x 200 = 50,000)
    n_groups: int = 250
    tau: float = 1.0  # reverse duration T in e^{lam T}
    # --- choices the paper leaves open (the Deviations page) ---
    t_star: float | None = None  # drift freeze time; None = the SDE's sampling_eps
    perturb_refs: bool | None = None  # refs to p_{t*}; None = (t_star > sampling_eps)
    n_prior: int | None = None  # N prior draws in (13); None = M
    convention: Literal["reverse_time", "paper_literal"] = "reverse_time"  # generator of the frozen reverse SDE
    exp_sign: Literal["plus", "minus"] = "plus"  # e^{+lam tau}: eq. (15) read in reverse time
    coeffs: Literal["paper", "biorthogonal"] = "paper"  # eq. (14) or biorthogonal projection
    literal_index: bool = False  # True: solve the Koopman problem, as eqs. (7)+(9) literally do
    regularisation: Literal["truncated", "tikhonov"] = "truncated"
    gram_rtol: float = GRAM_RTOL  # truncation of the G0 eigenbasis (Deviations)
    weights: Literal["operator", "uniform", "stationary"] = "operator"  # uniform: plain-KDE control
    neg_policy: Literal["positive_part", "abs", "clip"] = "positive_part"  # score where p0 <= 0
    output: Literal["last", "mean", "tweedie"] = "last"  # paper: last iterate
    step_rule: Literal["fixed", "snr"] = "fixed"  # "snr": score_sde's adaptive step (Remark 2)
    snr: float = 0.16
    init: Literal["solid", "gaussian", "structured"] = "solid"
    bandwidth: Literal["absolute", "median"] = "absolute"  # median: scale zeta, zeta_s by the data
    median_ref: float = 18.6  # CIFAR-10 [0, 1] median pairwise distance
    centered: bool | None = None  # model data scale: None = score_sde's (VE [0, 1], VP [-1, 1])
    seed: int = 0

    def check(self) -> None:
        require(self.M >= 1 and self.L >= 1, f"M and L must be >= 1, got M={self.M}, L={self.L}")
        require(self.M >= self.L, f"M = {self.M} reference points cannot give L = {self.L} eigenfunctions; need M >= L")
        require(self.zeta > 0, f"zeta must be > 0, got {self.zeta}")
        require(self.zeta_s > 0, f"zeta_s must be > 0, got {self.zeta_s}")
        require(self.step_size > 0, f"the Langevin step_size must be > 0, got {self.step_size}")
        require(self.eta >= 0, f"the noise scale eta must be >= 0, got {self.eta}")
        require(self.J >= 1, f"J must be >= 1, got {self.J}")
        require(self.n_per_group >= 1 and self.n_groups >= 1, "n_per_group and n_groups must be >= 1")
        require(self.tau > 0, f"tau must be > 0, got {self.tau}")
        require(self.t_star is None or 0 < self.t_star <= 1, f"t_star must be in (0, 1], got {self.t_star}")
        require(self.n_prior is None or self.n_prior >= 1, f"n_prior must be >= 1, got {self.n_prior}")
        require(0 <= self.gram_rtol < 1, f"gram_rtol must be in [0, 1), got {self.gram_rtol}")
        require(self.snr > 0 and self.median_ref > 0, "snr and median_ref must be > 0")
        require(not (self.literal_index and self.coeffs == "biorthogonal"),
                "literal_index=True reproduces the paper's literal reading and needs coeffs='paper'")
        _check_preset(self)

    @property
    def is_centered(self) -> bool:
        return (self.sde == "vp") if self.centered is None else self.centered

    def make_sde(self) -> VPSDE | VESDE:
        return make_sde(self.sde)


PRESETS: dict[str, dict] = {
    # literal wherever the paper is well-defined; eq. (15) read in reverse time (Methods B.3)
    "paper": {"convention": "reverse_time", "exp_sign": "plus", "coeffs": "paper", "literal_index": False,
              "regularisation": "truncated", "output": "last"},
    # reverse-time, truncated, biorthogonal, signed-LSE, Tweedie output (the Deviations page)
    "recommended": {"convention": "reverse_time", "exp_sign": "plus", "coeffs": "biorthogonal", "literal_index": False,
                    "regularisation": "truncated", "output": "tweedie"},
}


def _check_preset(cfg: FPConfig) -> None:
    if cfg.preset == "custom":
        return
    wrong = [f"{k}={getattr(cfg, k)!r}" for k, v in PRESETS[cfg.preset].items() if getattr(cfg, k) != v]
    require(not wrong, f"preset {cfg.preset!r} fixes {', '.join(f'{k}={v!r}' for k, v in PRESETS[cfg.preset].items())}; "
                       f"got {', '.join(wrong)} (use preset='custom' for other combinations)")


def fp_preset(name: Literal["paper", "recommended"], **overrides) -> FPConfig:
    """The ``paper`` or ``recommended`` preset with ``overrides``; it is named ``custom`` if they change a preset field."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose 'paper' or 'recommended'")
    changed = any(k in PRESETS[name] and v != PRESETS[name][k] for k, v in overrides.items())
    return FPConfig(**{**PRESETS[name], **overrides, "preset": "custom" if changed else name})


def fp_variant(base: FPConfig, preset: Literal["paper", "recommended"] = "paper", **overrides) -> FPConfig:
    """``base``'s settings under ``preset`` with ``overrides``: every field the presets fix comes from ``preset``.

    E.g. ``fp_variant(base, "recommended", sde="vp", M=500)``: the image experiments derive all their
    sampler configs from one base this way.
    """
    fixed = set().union(*PRESETS.values()) | {"preset"}
    kept = {f.name: getattr(base, f.name) for f in fields(base) if f.name not in fixed}
    return fp_preset(preset, **{**kept, **overrides})
