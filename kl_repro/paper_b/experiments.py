"""Paper B's experiments: the eigen-spectra chapter and the operator-sampler chapter (floor 5).

``fp_paper_spec.md`` section 8, experiments E1-E4, and paper B's Tables 1-3 and Figs. 1-2, at the
scale of a profile.  The notebooks ``05_eigen_spectra`` and ``06_operator_sampler`` build one config
each (:class:`EigenSpectraConfig`, :class:`OperatorSamplerConfig`), call the functions here, plot, and
store artefacts built by :mod:`kl_repro.paper_b.report` (our numbers, the paper's, verdicts).

What stands in for the paper's set-up, and why (spec 8): no Song et al. checkpoints exist offline,
so the score model is the **ideal score** of a training subset (exact for the perturbed empirical
measure, hence a memorising model) or an exact Gaussian-mixture score; quality is measured with
``FD_clf`` (a Frechet distance in a small classifier's features, never called FID) on ``digits``,
and timings compare samplers on the same score model and machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from kl_repro.paper_b import fpsampler as fp
from kl_repro.paper_b import gedmd
from kl_repro.paper_a import kl
from kl_repro.core.config import Config, ConfigError, require, to_dict
from kl_repro.paper_a.ddim import pc_preset, pc_sample
from kl_repro.paper_b.sde import VESDE, VPSDE, GaussianMixture, IdealScore, MixtureScore

__all__ = [
    "EigenSpectraConfig",
    "OperatorSamplerConfig",
    "set_threads",
    "ve_t_of_sigma",
    "brownian_spectrum",
    "ou_spectrum",
    "mixture_spectra",
    "load_pool",
    "image_spectra",
    "e1_ou_propagation",
    "e2_mixture_sampling",
    "ImageSetup",
    "image_setup",
    "fp_run",
    "pc_run",
    "frechet",
    "table1",
    "table2",
    "table3",
    "fig2_inits",
    "ablations",
    "extra_datasets",
    "to_library",
]


def _profile(name: str) -> None:
    from kl_repro.core.profiles import check_profile_name

    check_profile_name(name)


def set_threads(n: int | None) -> None:
    """Limit torch and the BLAS/OpenMP pools (threadpoolctl) to ``n`` threads for the rest of the process (``None``: no change)."""
    if n is None:
        return
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def ve_t_of_sigma(sigma: float, sde: VESDE = VESDE()) -> float:
    """The VE time ``t`` with ``sigma(t) = sigma``."""
    return math.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)


# =============================================================================== chapter 05


@dataclass(frozen=True)
class EigenSpectraConfig(Config):
    """Parameters of ``notebooks/05_eigen_spectra.ipynb`` (paper A's covariance operator beside paper B's FP operator)."""

    profile: str = "cpu"
    n_grid: int = 1000  # Nystrom grid for the Brownian covariance operator (paper A, eq. (8))
    n_eig: int = 10
    ou_M: int = 500  # spec T1 setup
    ou_zeta: float = 1.0
    mix_M: int = 1000  # spec T5 setup
    mix_zeta: float = 0.5
    sigma_stars: tuple[float, ...] = (0.1, 0.3, 1.0, 1.5)  # VE sigma(t*) of the 2-D spectra
    grid_n: int = 121  # 2-D evaluation grid per axis
    image_dataset: str = "digits"
    image_pool: int = 1500
    image_M: int = 1000
    image_t_stars: tuple[float, ...] = (1e-5, 0.1, 0.3, 0.5)  # VE freeze times for the image spectra
    n_show: int = 20
    seed: int = 0
    threads: int | None = None  # torch and BLAS CPU threads (None: the defaults); speed only

    def check(self) -> None:
        _profile(self.profile)
        require(self.threads is None or self.threads >= 1, f"threads must be None or >= 1, got {self.threads}")
        require(self.n_grid >= 10 and self.n_eig >= 2, "need n_grid >= 10 and n_eig >= 2")
        require(self.ou_M >= 20 and self.mix_M >= 20 and self.image_M >= 20, "M values must be >= 20")
        require(self.image_M <= self.image_pool, f"image_M = {self.image_M} > image_pool = {self.image_pool}")
        require(self.ou_zeta > 0 and self.mix_zeta > 0, "bandwidths must be > 0")
        require(len(self.sigma_stars) >= 1 and all(s > 0 for s in self.sigma_stars), "sigma_stars must be > 0")
        require(all(0 < t <= 1 for t in self.image_t_stars), "image_t_stars must be in (0, 1]")
        require(self.grid_n >= 21 and self.n_show >= 4, "grid_n >= 21 and n_show >= 4")


def brownian_spectrum(n_grid: int, n_eig: int) -> dict:
    """Paper A's covariance operator ``min(s, t)``: closed form ``((k - 1/2) pi)^-2`` against Nystrom."""
    out = kl.compare_eigenpairs("brownian", n_grid, n_eig)
    out["gap_ratio"] = float(out["lam_analytic"][0] / out["lam_analytic"][1])  # = 9
    return out


def _hermite(n: int, x: np.ndarray) -> np.ndarray:
    from numpy.polynomial.hermite_e import hermeval

    c = np.zeros(n + 1)
    c[n] = 1.0
    return hermeval(x, c)


def ou_spectrum(M: int = 500, zeta: float = 1.0, seed: int = 0, n_show: int = 10) -> dict:
    """OU ``dX = -X dt + sqrt(2) dW`` (spec T1-T3): truncated gEDMD against plain Tikhonov, eigen-densities.

    Returns eigenvalues of both solvers, the number of spurious ``|lam| < 1e-6`` among the top
    ``n_show``, the rank ``r``, and the first three FP eigen-densities against the smoothed Hermite
    functions ``sigma^-n He_n(x / sigma) N(x; 0, sigma^2)``, ``sigma^2 = 1 + zeta^2``.
    """
    X = np.random.default_rng(seed).standard_normal((M, 1))
    res = gedmd.fit(X, -X, 2.0, zeta, n_keep=4)
    G0, K = gedmd.gram_generator(X, -X, 2.0, zeta)
    lam_tik, *_ = gedmd.solve(G0, K, regularisation="tikhonov", tikhonov=1e-6, n_keep=1)
    xs = np.linspace(-6, 6, 601)
    rho = res.density(xs[:, None], 3).real
    s = math.sqrt(1 + zeta**2)
    curves, errs = [], []
    for n in range(3):
        target = s**-n * _hermite(n, xs / s) * np.exp(-xs**2 / (2 * s * s)) / math.sqrt(2 * math.pi * s * s)
        alpha = (rho[:, n] @ target) / (rho[:, n] @ rho[:, n])
        curves.append((alpha * rho[:, n], target))
        errs.append(float(np.abs(alpha * rho[:, n] - target).sum() / np.abs(target).sum()))
    return {
        "lam_truncated": res.lam[:n_show].real, "lam_tikhonov": lam_tik[:n_show].real, "lam_exact": -np.arange(n_show, dtype=float),
        "spurious_truncated": int(np.sum(np.abs(res.lam[:n_show]) < 1e-6)) - int(abs(res.lam[0]) < 1e-6),
        "spurious_tikhonov": int(np.sum(np.abs(lam_tik[:n_show]) < 1e-6)),
        "r": res.info["r"], "M": M, "x": xs, "densities": curves, "density_rel_l1": errs,
    }


def _grid(n: int, lim: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(-lim, lim, n)
    return xs, np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)


def _smooth(f: np.ndarray, n: int, h: float, width: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(f.reshape(n, n), width / h, mode="constant", truncate=6.0).ravel()


def _l1(f: np.ndarray, g: np.ndarray) -> float:
    return float(np.abs(f / f.sum() - g / g.sum()).sum())


def _mixture_fit(sde, t_star: float, M: int, zeta: float, seed: int, mixture: GaussianMixture, n_keep: int = 8):
    g = torch.Generator().manual_seed(seed)
    x0, _ = mixture.sample(M, g)
    mean, std = sde.marginal(x0, t_star)
    X = mean + std * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    B, a = fp.drift_at(MixtureScore(mixture, sde), sde, X, t_star)
    return gedmd.fit(X.numpy(), B, a, zeta, n_keep=n_keep), a


def mixture_spectra(sigma_stars=(0.1, 0.3, 1.0, 1.5), M: int = 1000, zeta: float = 0.5, grid_n: int = 121, seed: int = 0,
                    n_show: int = 20, vp_t_star: float = 0.3) -> dict:
    """2-D mixture with exact VE scores (spec T5/E2): spectrum against ``t*`` and what the top eigen-density is.

    For each ``sigma* = sigma(t*)``: eigenvalues in units of ``a = g(t*)^2``, the metastable cluster size,
    and the L1 distance of the top eigen-density to ``p_{t*}^2 * k`` and to ``p_{t*} * k`` on a grid.  One VP
    row (``t* = vp_t_star``) compares with ``p^2 e^{|x|^2/2} * k``.  ``densities`` holds the top four
    eigen-densities of ``sigma* = 1`` (or the first) for plotting.
    """
    mixture = GaussianMixture()
    xs, G = _grid(grid_n)
    h = xs[1] - xs[0]
    rows, show = [], None
    cases = [("ve", VESDE(), ve_t_of_sigma(s), s) for s in sigma_stars] + [("vp", VPSDE(), vp_t_star, None)]
    for kind, sde, t_star, s in cases:
        res, a = _mixture_fit(sde, t_star, M, zeta, seed, mixture)
        rho = res.density(G, 4).real
        p = np.exp(mixture.log_prob(torch.from_numpy(G), t_star, sde).numpy())
        extra = np.exp((G**2).sum(1) / 2) if kind == "vp" else 1.0
        rows.append({
            "sde": kind, "sigma_star": s, "t_star": t_star, "a": a, "r": res.info["r"],
            "lam_over_a": (res.lam[:n_show] / a), "cluster_size": gedmd.cluster_size(res.lam),
            "max_im_over_re": gedmd.spectrum_report(res.lam)["max_im_over_re"],
            "l1_to_p2": _l1(rho[:, 0], _smooth(p**2 * extra, grid_n, h, zeta)),
            "l1_to_p": _l1(rho[:, 0], _smooth(p, grid_n, h, zeta)),
        })
        if kind == "ve" and (show is None or s == 1.0):
            show = {"sigma_star": s, "rho": rho.reshape(grid_n, grid_n, 4), "p2": _smooth(p**2, grid_n, h, zeta).reshape(grid_n, grid_n)}
    return {"rows": rows, "grid": xs, "show": show, "M": M, "zeta": zeta}


def load_pool(dataset: str, n: int, split: str = "train", resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first ``n`` unaugmented images of ``dataset`` as uint8 ``(n, C, H, W)`` and labels, or ``None`` if absent."""
    from kl_repro.data import DataConfig, load_images

    try:
        return load_images(DataConfig(name=dataset, split=split, subset=n, flip=False, resolution=resolution))
    except (ConfigError, FileNotFoundError, OSError):
        return None


def to_model(images_uint8: torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 images to the model's scale (score_sde: VE ``[0, 1]``, VP ``[-1, 1]``), float64."""
    x = images_uint8.double() / 255.0
    return x if kind == "ve" else 2.0 * x - 1.0


def to_library(x_model: torch.Tensor, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Model-scale samples (flat or not) to library images ``(N, C, H, W)`` float32 in ``[-1, 1]``, clipped."""
    x = x_model.reshape(x_model.shape[0], *shape).float()
    x = 2.0 * x - 1.0 if kind == "ve" else x
    return x.clamp(-1.0, 1.0)


def image_spectra(dataset: str = "digits", pool: int = 1500, M: int = 1000, t_stars=(1e-5, 0.1, 0.3, 0.5), seed: int = 0, n_show: int = 20) -> dict:
    """FP spectrum of the frozen VE reverse SDE on images with the ideal score, against ``t*`` (spec 3.6).

    Paper-equivalent bandwidths (``bandwidth="median"``).  Reports the top eigenvalues, the Laplacian's
    uniform shift ``-a d / (2 zeta^2)``, the spread of the top five relative to it, the cluster size, the
    rank and conditioning.  Returns ``None`` rows when the data set is absent.
    """
    data = load_pool(dataset, pool)
    if data is None:
        return {"dataset": dataset, "available": False, "rows": []}
    sde = VESDE()
    x = to_model(data[0], "ve")
    score = IdealScore(x, sde)
    rows = []
    for t_star in t_stars:
        cfg = fp.fp_preset("paper", M=M, t_star=t_star, bandwidth="median", seed=seed)
        X, _, g = fp.group_references(x, sde, cfg)
        eig, _, rep = fp.fit_operator(score, sde, X, cfg, 2, g)
        lam = eig.lam[:n_show]
        rows.append({"t_star": t_star, "sigma_t": float(sde.sigma(t_star)), "a": rep["a"], "zeta": rep["zeta"], "r": rep["r"],
                     "cond": rep["cond_kept"], "lam": lam, "laplacian_shift": rep["laplacian_shift"],
                     "top5_spread_over_shift": float((lam[0].real - lam[4].real) / abs(rep["laplacian_shift"])),
                     "positive_eigenvalues": int(np.sum(eig.lam.real > 1e-9 * np.abs(eig.lam).max())),
                     "cluster_size": rep["cluster_size"], "max_im_over_re": rep["max_im_over_re"], "t_gedmd": rep["t_gedmd"]})
    return {"dataset": dataset, "available": True, "d": int(x[0].numel()), "M": M, "rows": rows}


# =============================================================================== chapter 06


@dataclass(frozen=True)
class OperatorSamplerConfig(Config):
    """Parameters of ``notebooks/06_operator_sampler.ipynb``: paper B's Tables 1-3, Figs. 1-2 and E1-E4."""

    profile: str = "cpu"
    seed: int = 0
    # E1: OU operator validation (spec T4)
    ou_M: int = 500
    ou_n_prior: int = 4000
    # E2: 2-D mixture with exact scores
    mix_M: int = 600
    mix_zeta: float = 0.5
    mix_chains: int = 500
    mix_J: int = 500
    mix_eps: float = 0.02  # eps / zeta_s^2 = 0.08 (the paper's 0.5 / 25 = 0.02 would need 4x more steps)
    mix_sigma_star: float = 1.0
    mix_sigma_metastable: float = 0.3
    # E3 and Tables 1-3: images with the ideal score of a training subset
    dataset: str = "digits"
    pool: int = 1500  # training images behind the ideal score and the references
    M: int = 1000  # paper: 2000 (digits has 1,500 training images)
    L: int = 5
    J: int = 1000
    n_groups: int = 5  # paper: 250
    n_per_group: int = 100  # paper: 200
    pc_N: int = 1000  # PC steps (PC1000)
    pc_images: int = 500
    fd: bool = True  # Frechet distance and KID of the samples (FD_clf on digits)
    fd_extractor: str | None = None  # None: kl_repro.evaluation.metrics.default_extractor(dataset) (clf for digits, Inception else)
    fd_reference_images: int | None = None  # first N training images for the reference statistics (None: all)
    M_values: tuple[int, ...] = (250, 500, 1000, 1500)  # paper: 500 ... 5000
    L_values: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100)
    sweep_groups: int = 2
    sweep_per_group: int = 50
    fig2_M: int = 1500  # paper: 5000
    fig2_images: int = 12
    ablation_images: int = 100
    extra_datasets: tuple[str, ...] = ("mnist", "cifar10")  # used where $KL_REPRO_DATA has them
    extra_pool: int = 2000
    extra_M: int = 1000
    extra_images: int = 36
    threads: int | None = None  # torch and BLAS CPU threads (None: the defaults); speed only

    def check(self) -> None:
        _profile(self.profile)
        require(self.threads is None or self.threads >= 1, f"threads must be None or >= 1, got {self.threads}")
        require(self.dataset in ("digits", "mnist", "cifar10"), f"dataset must be digits, mnist or cifar10, got {self.dataset!r}")
        require(self.M <= self.pool and max(self.M_values) <= self.pool and self.fig2_M <= self.pool,
                f"every M (M={self.M}, M_values={self.M_values}, fig2_M={self.fig2_M}) must be <= pool = {self.pool}")
        require(min(self.M_values) >= max(self.L, 2), f"every M must be >= L = {self.L}")
        require(max(self.L_values) < min(self.M, self.pool), f"every L must be < M = {self.M}")
        require(self.L >= 1 and self.J >= 1 and self.mix_J >= 1, "L and J must be >= 1")
        for f in ("n_groups", "n_per_group", "pc_images", "sweep_groups", "sweep_per_group", "fig2_images", "ablation_images",
                  "mix_chains", "extra_images", "ou_n_prior", "pc_N"):
            require(getattr(self, f) >= 1, f"{f} must be >= 1, got {getattr(self, f)}")
        require(self.mix_M >= 20 and self.ou_M >= 20, "mix_M and ou_M must be >= 20")
        require(self.mix_zeta > 0 and self.mix_eps > 0 and self.mix_sigma_star > 0 and self.mix_sigma_metastable > 0,
                "mixture bandwidth, step and sigma* must be > 0")
        require(self.extra_M <= self.extra_pool, f"extra_M = {self.extra_M} > extra_pool = {self.extra_pool}")
        require(self.fd_reference_images is None or self.fd_reference_images >= 2, "fd_reference_images must be None or >= 2")
        if self.fd_extractor is not None:
            from kl_repro.evaluation.features import check_extractor_name

            check_extractor_name(self.fd_extractor)

    def fp_config(self, kind: str, preset: str = "paper", **overrides) -> fp.FPConfig:
        """The FP sampler config of the image experiments: the paper's values, median-scaled bandwidths."""
        base = dict(sde=kind, M=self.M, L=self.L, J=self.J, n_per_group=self.n_per_group, n_groups=self.n_groups,
                    bandwidth="median", seed=self.seed)
        base.update(overrides)
        return fp.fp_preset(preset, **base)


# --------------------------------------------------------------------- E1


def e1_ou_propagation(M: int = 500, n_prior: int = 4000, seed: int = 0, zeta: float = 1.0) -> dict:
    """E1 / T4: propagate ``p_T = N(1.5, 0.5^2)`` under OU with every coefficient rule; L1 to the exact density.

    Rules: biorthogonal with ``e^{+lam tau}``; the paper's eq. (14) with ``e^{-lam tau}`` and ``e^{+lam tau}``;
    the literal index reading (Koopman vectors as densities).  Exact: ``N(1.5 e^-tau, 0.25 e^-2tau + 1 - e^-2tau + zeta^2)``.
    """
    X = np.random.default_rng(seed).standard_normal((M, 1))
    res = gedmd.fit(X, -X, 2.0, zeta, n_keep=8)
    Y = np.random.default_rng(seed + 1).normal(1.5, 0.5, (n_prior, 1))
    log_s, _ = fp.prior_log_mass(res.X, Y, zeta)
    xs = np.linspace(-6, 7, 1301)
    h = xs[1] - xs[0]
    from kl_repro.paper_b.kernels import gram

    Kx = gram(xs[:, None], res.X, zeta)
    rules = {"biorthogonal, e^{+lam tau}": ("biorthogonal", "plus", False), "paper (14), e^{-lam tau}": ("paper", "minus", False),
             "paper (14), e^{+lam tau}": ("paper", "plus", False), "literal index (Koopman vectors)": ("paper", "minus", True)}
    rows, curves = [], {}
    for tau in (0.5, 1.0):
        var = 0.25 * math.exp(-2 * tau) + 1 - math.exp(-2 * tau) + zeta**2
        exact = np.exp(-(xs - 1.5 * math.exp(-tau)) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
        for L in (1, 3, 5):
            row = {"tau": tau, "L": L}
            for name, (coeffs, sign, literal) in rules.items():
                U, V = (res.V, res.U) if literal else (res.U, res.V)
                c = fp.coefficients(U[:, :L], V[:, :L], res.pairing[:L], log_s, coeffs)
                dens = Kx @ fp.mode_weights(res.lam[:L], U[:, :L], c, tau, sign)
                dens = dens / (dens.sum() * h)
                row[name] = float(np.abs(dens - exact).sum() * h)
                if tau == 0.5 and L == 5:
                    curves[name] = dens
            rows.append(row)
            if tau == 0.5 and L == 5:
                curves["exact"] = exact
    return {"rows": rows, "x": xs, "curves": curves, "lam": res.lam[:6].real, "M": M, "n_prior": n_prior}


# --------------------------------------------------------------------- E2


def e2_mixture_sampling(cfg: OperatorSamplerConfig) -> dict:
    """E2: the FP sampler on the 2-D mixture with exact VE scores; what it targets, against PC1000.

    At ``sigma* = mix_sigma_star``: mode frequencies of FP chains (presets ``paper``/``recommended``,
    ``eta`` in {1, 0.2}, box and Gaussian inits), the uniform-weight KDE control and PC1000, against
    the data weights ``w``, ``w^2`` (separated-modes limit of ``pi ~ p^2``) and the masses of
    ``p_{t*}^2 * N(0, zeta_s^2)`` (the ideal target at ``eta = 1``).  Also the metastable case
    ``mix_sigma_metastable``, where the top eigenvector is not identifiable.
    """
    mixture = GaussianMixture()
    sde = VESDE()
    means = torch.tensor(mixture.means, dtype=torch.float64)
    w = np.array(mixture.weights) / sum(mixture.weights)
    pool, _ = mixture.sample(max(5 * cfg.mix_M, 2000), torch.Generator().manual_seed(cfg.seed + 7))
    score = MixtureScore(mixture, sde)
    xs, G = _grid(161, 6.0)
    h = xs[1] - xs[0]
    voronoi = torch.cdist(torch.from_numpy(G), means).argmin(1).numpy()

    def masses(f):
        return np.bincount(voronoi, weights=f, minlength=3) / f.sum()

    def freq(x):
        return np.bincount(mixture.component_of(x.double()).numpy(), minlength=3) / x.shape[0]

    rows = []
    t_star = ve_t_of_sigma(cfg.mix_sigma_star)
    p_t = np.exp(mixture.log_prob(torch.from_numpy(G), t_star, sde).numpy())
    preds = {"data weights w": w, "w^2 (separated modes)": w**2 / (w**2).sum(),
             "p_t* (mass)": masses(p_t), "p_t*^2 * N(0, zeta_s^2) (eta = 1 target)": masses(_smooth(p_t**2, 161, h, cfg.mix_zeta))}
    runs = [("paper", 1.0, "solid", "operator"), ("recommended", 1.0, "solid", "operator"), ("paper", 0.2, "solid", "operator"),
            ("recommended", 0.2, "solid", "operator"), ("recommended", 0.2, "gaussian", "operator"), ("recommended", 1.0, "solid", "uniform")]
    samples = {}
    for sigma, tag in ((cfg.mix_sigma_star, "main"), (cfg.mix_sigma_metastable, "metastable")):
        for preset, eta, init, weights in (runs if tag == "main" else runs[1:2]):
            c = fp.fp_preset(preset, M=cfg.mix_M, L=cfg.L, zeta=cfg.mix_zeta, zeta_s=cfg.mix_zeta, eps=cfg.mix_eps, J=cfg.mix_J,
                             eta=eta, t_star=ve_t_of_sigma(sigma), n_per_group=cfg.mix_chains, init=init, weights=weights,
                             seed=cfg.seed)
            res = fp.sample_group(score, sde, pool, c, box=(np.array([-4.0, -2.0]), np.array([4.0, 4.0])))
            rep = res.density.report
            name = f"FP {preset}, eta={eta:g}, init={init}" + (", uniform-weight KDE" if weights == "uniform" else "")
            rows.append({"case": tag, "sigma_star": sigma, "sampler": name, "freq": freq(res.samples),
                         "fallback_frac": float(res.stats["n_fallback"].sum() / (cfg.mix_chains * cfg.mix_J)),
                         "frac_negative_w": rep.get("frac_negative_w", 0.0),
                         "lam_over_a": np.real(rep["top"][:4]) / rep["a"] if "top" in rep else None,
                         "cluster_size": rep.get("cluster_size"), "t_setup": res.t_setup, "t_sampling": res.t_sampling})
            samples[(tag, name)] = res.samples.double().numpy()
    g = torch.Generator().manual_seed(cfg.seed + 11)
    pc_sde = VESDE(N=cfg.pc_N)
    x_pc, nfe = pc_sample(MixtureScore(mixture, pc_sde), pc_sde, cfg.mix_chains, pc_preset("ve_pc1000"), g, dtype=torch.float64)
    rows.append({"case": "main", "sigma_star": None, "sampler": f"PC{cfg.pc_N} (reverse SDE, exact score)", "freq": freq(x_pc),
                 "fallback_frac": 0.0, "nfe": nfe})
    samples[("main", "PC")] = x_pc.numpy()
    return {"rows": rows, "predictions": preds, "samples": samples, "means": mixture.means, "weights": w.tolist(),
            "sigma_star": cfg.mix_sigma_star, "chains": cfg.mix_chains, "J": cfg.mix_J}


# --------------------------------------------------------------------- images


@dataclass
class ImageSetup:
    """Data and score models of the image experiments: ``images`` uint8 ``(n, C, H, W)``, model-scale pools and ideal scores per SDE."""

    dataset: str
    images: torch.Tensor
    test: torch.Tensor | None
    pools: dict
    scores: dict
    sdes: dict

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


def image_setup(dataset: str, pool: int, pc_N: int = 1000) -> ImageSetup:
    """The first ``pool`` training images of ``dataset`` and the ideal VE/VP scores of them (the shared score model)."""
    data = load_pool(dataset, pool)
    if data is None:
        raise ConfigError(f"data set {dataset!r} is not available (set $KL_REPRO_DATA to the folder holding it)")
    test = load_pool(dataset, 10_000, split="test")
    sdes = {"ve": VESDE(N=pc_N), "vp": VPSDE(N=pc_N)}
    pools = {k: to_model(data[0], k) for k in sdes}
    scores = {k: IdealScore(pools[k], sdes[k]) for k in sdes}
    return ImageSetup(dataset, data[0], None if test is None else test[0], pools, scores, sdes)


def fp_run(setup: ImageSetup, fcfg: fp.FPConfig, n_groups: int, n_per_group: int) -> dict:
    """``n_groups`` groups of the FP sampler on the ideal score; samples as library images plus diagnostics."""
    kind = fcfg.sde
    out = fp.sample_groups(setup.scores[kind], setup.sdes[kind], setup.pools[kind], fcfg, n_groups, n_per_group)
    images = to_library(out["samples"], kind, setup.shape)
    train = to_library(setup.pools[kind].reshape(len(setup.images), -1), kind, setup.shape)
    refs = [to_library(torch.as_tensor(r.density.refs), kind, setup.shape) for r in out["groups"]]
    mem = fp.memorisation_report(images, train, refs)
    reps = [r.density.report for r in out["groups"]]
    keys = ("n_eff_prior", "n_eff_refs", "n_eff_weights", "frac_negative_w", "r", "cluster_size", "max_im_over_re", "laplacian_shift")
    summary = {k: float(np.mean([rp[k] for rp in reps if k in rp])) for k in keys if any(k in rp for rp in reps)}
    lam = np.array([np.real(rp["top"][:fcfg.L]) for rp in reps if "top" in rp]) if "top" in reps[0] else None
    return {"images": images, "report": out["report"], "memorisation": mem, "operator": summary, "lam_top": lam,
            "t_setup_per_group": out["report"]["t_setup"] / n_groups, "t_sampling_per_group": out["report"]["t_sampling"] / n_groups,
            "groups": out["groups"], "x0": torch.cat([r.x0.reshape(r.x0.shape[0], -1) for r in out["groups"]])}


def pc_run(setup: ImageSetup, kind: str, preset: str, n: int, batch: int, seed: int) -> dict:
    """PC on the same ideal score, in batches of ``batch``; samples as library images, time per batch, NFE."""
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
    train = to_library(setup.pools[kind].reshape(len(setup.images), -1), kind, setup.shape)
    return {"images": images, "nfe": nfe, "t_batch": float(np.mean(times)), "batch": batch, "label": f"{pcfg.label}, N={sde.N}",
            "memorisation": fp.memorisation_report(images, train)}


def frechet(images: torch.Tensor, cfg: "OperatorSamplerConfig", sampler: str) -> dict | None:
    """Frechet distance (and KID) of library images against the data set's training split (:mod:`kl_repro.evaluation.metrics`).

    The extractor is ``cfg.fd_extractor`` or the data set's default (``clf`` for ``digits``: the metric is
    FD_clf, never "FID"; Inception for the others: FID).  Reference: the first ``cfg.fd_reference_images``
    training images.  Returns the metric's dict (its name under ``"metric"``) or None for fewer than 10 images.
    """
    from kl_repro.evaluation import metrics

    if len(images) < 10:
        return None
    extractor = cfg.fd_extractor or metrics.default_extractor(cfg.dataset)
    ref = metrics.ReferenceConfig(dataset=cfg.dataset, split="train", num_images=cfg.fd_reference_images)
    res = metrics.evaluate_images(images, ref, sampler, extractor=extractor, kid=metrics.KIDConfig())  # KID subset capped, reported
    return res.as_dict()


def _time_fp(setup: ImageSetup, fcfg: fp.FPConfig, n: int, group: int) -> dict:
    """Time of one FP group producing ``n`` images: set-up and sampling separately."""
    kind = fcfg.sde
    t0 = time.perf_counter()
    X, _, g = fp.group_references(setup.pools[kind], setup.sdes[kind], fcfg, group)
    dens = fp.fit_density(setup.scores[kind], setup.sdes[kind], X, fcfg, g)
    t_setup = time.perf_counter() - t0
    x0 = fp.initial_points(fcfg, n, setup.shape, setup.pools[kind], g)
    _, _, t_sampling = fp.run_chains(dens, x0, fcfg, g)
    return {"setup": t_setup, "sampling": t_sampling}


def table1(cfg: OperatorSamplerConfig, setup: ImageSetup) -> dict:
    """Paper B's Table 1 on this machine: FP (paper and recommended presets) against PC on the same ideal score.

    Times for 1 and 100 images (FP with and without set-up), FD_clf/KD_clf on the sampled images, the
    memorisation report, and the per-image time ratios PC / FP.  IS needs Inception logits that are not
    available offline; it is reported as such.
    """
    rows, images = [], {}
    n100 = min(100, cfg.n_per_group)
    for kind, pc_name in (("ve", "ve_pc1000"), ("vp", "vp_pc1000")):
        pc = pc_run(setup, kind, pc_name, cfg.pc_images, n100, cfg.seed)
        t_pc1 = _timed(lambda: pc_sample(setup.scores[kind], setup.sdes[kind], 1, pc_preset(pc_name), torch.Generator().manual_seed(1)))
        row_pc = {"method": f"PC ({kind.upper()}, {pc['label']})", "sde": kind, "preset": "baseline", "time_1": t_pc1,
                  "time_100": pc["t_batch"] * 100 / n100, "nfe": pc["nfe"], "n_samples": len(pc["images"]),
                  "memorisation": pc["memorisation"]}
        if cfg.fd:
            row_pc["fd"] = frechet(pc["images"], cfg, row_pc["method"])
        rows.append(row_pc)
        images[f"pc_{kind}"] = pc["images"]
        for preset in ("paper", "recommended"):
            fcfg = cfg.fp_config(kind, preset)
            run = fp_run(setup, fcfg, cfg.n_groups, cfg.n_per_group)
            one = _time_fp(setup, fcfg, 1, group=10_000)
            per_img = run["t_sampling_per_group"] / cfg.n_per_group
            row = {"method": f"FP ({kind.upper()}, preset {preset})", "sde": kind, "preset": preset,
                   "time_1": one["setup"] + one["sampling"], "time_1_no_setup": one["sampling"],
                   "time_100": run["t_setup_per_group"] + per_img * 100, "time_100_no_setup": per_img * 100,
                   "t_setup_group": run["t_setup_per_group"], "n_samples": len(run["images"]),
                   "fallback_steps": run["report"]["fallback_steps"], "chains_with_fallback": run["report"]["chains_with_fallback"],
                   "nonfinite_samples": run["report"]["nonfinite_samples"], "memorisation": run["memorisation"], "operator": run["operator"],
                   "config": to_dict(fcfg)}
            if cfg.fd:
                row["fd"] = frechet(run["images"], cfg, row["method"])
            rows.append(row)
            images[f"fp_{kind}_{preset}"] = run["images"]
    floor = None
    if cfg.fd and setup.test is not None:
        floor = frechet(setup.test.float() / 127.5 - 1.0, cfg, f"held-out {setup.dataset} test images (floor)")
    for kind in ("ve", "vp"):
        pc_row = next(r for r in rows if r["sde"] == kind and r["preset"] == "baseline")
        for r in rows:
            if r["sde"] == kind and r["preset"] != "baseline":
                r["speedup_1"] = pc_row["time_1"] / r["time_1"]
                r["speedup_1_no_setup"] = pc_row["time_1"] / r["time_1_no_setup"]
                r["speedup_100"] = pc_row["time_100"] / r["time_100"]
                r["speedup_100_no_setup"] = pc_row["time_100"] / r["time_100_no_setup"]
    return {"rows": rows, "images": images, "fd_floor": floor, "IS": "not computed: Inception logits need torch-fidelity's own weights (not available offline)"}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _mean_pairwise(x: torch.Tensor) -> float:
    f = x.reshape(x.shape[0], -1).double()
    D = torch.cdist(f, f)
    n = len(f)
    return float(D.sum() / max(n * (n - 1), 1))


def table2(cfg: OperatorSamplerConfig, setup: ImageSetup) -> dict:
    """Table 2 in shape: the effect of M (VE, paper preset): FD_clf, diversity, times, and the two candidate mechanisms.

    Hypothesis (i) of spec E4: the VE prior projection is dominated by one prior draw (``n_eff_prior``) and
    weights concentrate as M grows (``n_eff_weights / M``); diversity is the mean pairwise distance of the
    samples and the number of distinct nearest training images.
    """
    rows = []
    for M in cfg.M_values:
        fcfg = cfg.fp_config("ve", "paper", M=M, n_per_group=cfg.sweep_per_group)
        run = fp_run(setup, fcfg, cfg.sweep_groups, cfg.sweep_per_group)
        per_img = run["t_sampling_per_group"] / cfg.sweep_per_group
        row = {"M": M, "time_1": run["t_setup_per_group"] + per_img, "time_100": run["t_setup_per_group"] + 100 * per_img,
               "time_100_no_setup": 100 * per_img, "n_samples": len(run["images"]), "mean_pairwise": _mean_pairwise(run["images"]),
               "distinct_nn": run["memorisation"]["distinct_nn"], "d_train_median": run["memorisation"]["d_train_median"],
               **{k: run["operator"].get(k) for k in ("n_eff_prior", "n_eff_weights", "frac_negative_w")},
               "fallback_steps": run["report"]["fallback_steps"]}
        row["n_eff_weights_over_M"] = row["n_eff_weights"] / M if row["n_eff_weights"] else None
        if cfg.fd:
            row["fd"] = frechet(run["images"], cfg, f"FP VE paper preset, M={M}")
        rows.append(row)
    return {"rows": rows}


def table3(cfg: OperatorSamplerConfig, setup: ImageSetup) -> dict:
    """Table 3 in shape: the effect of L (VE, paper preset, M = cfg.M) with common random numbers.

    One operator per group serves every L (same references, prior draws, initialisations and Langevin
    noise), so differences are due to L alone.  Reports FD_clf, the mean displacement of each sample from
    its L = 5 counterpart (relative to the training NN distance), the correlation of the weights with
    the L = 1 weights, and the spread of the top-L eigenvalues ``|lam_L - lam_1| tau`` (hypothesis (ii)).
    """
    kind = "ve"
    score, sde, pool = setup.scores[kind], setup.sdes[kind], setup.pools[kind]
    fcfg = cfg.fp_config(kind, "paper", n_per_group=cfg.sweep_per_group)
    Lmax = max(cfg.L_values)
    per_L = {L: {"x": [], "w_corr": [], "t": [], "lam_spread": [], "fallback": 0} for L in cfg.L_values}
    t_setup = []
    for grp in range(cfg.sweep_groups):
        t0 = time.perf_counter()
        X, _, g = fp.group_references(pool, sde, fcfg, grp)
        eig, log_s, rep = fp.fit_operator(score, sde, X, fcfg, Lmax + 2, g)
        t_setup.append(time.perf_counter() - t0)
        x0 = fp.initial_points(fcfg, cfg.sweep_per_group, setup.shape, pool, g)
        w1 = fp.density_from_operator(eig, log_s, fcfg, rep, 1).w
        for L in cfg.L_values:
            dens = fp.density_from_operator(eig, log_s, fcfg, rep, L)
            x, stats, t = fp.run_chains(dens, x0, fcfg, torch.Generator().manual_seed(cfg.seed * 7919 + grp))
            per_L[L]["x"].append(x)
            per_L[L]["t"].append(t)
            per_L[L]["w_corr"].append(float(np.corrcoef(dens.w, w1)[0, 1]))
            per_L[L]["lam_spread"].append(float(abs(eig.lam[L - 1].real - eig.lam[0].real) * fcfg.tau))
            per_L[L]["fallback"] += int(stats["n_fallback"].sum())
    train = to_library(pool.reshape(len(setup.images), -1), kind, setup.shape)
    nn_med = fp.memorisation_report(train[:2], train)["train_nn_median"]
    ref_L = 5 if 5 in per_L else cfg.L_values[0]
    x_ref = to_library(torch.cat(per_L[ref_L]["x"]), kind, setup.shape).flatten(1)
    rows = []
    for L in cfg.L_values:
        x = torch.cat(per_L[L]["x"])
        imgs = to_library(x, kind, setup.shape)
        per_img = float(np.mean(per_L[L]["t"])) / cfg.sweep_per_group
        row = {"L": L, "time_1": float(np.mean(t_setup)) + per_img, "time_100": float(np.mean(t_setup)) + 100 * per_img,
               "time_100_no_setup": 100 * per_img, "n_samples": len(imgs),
               "displacement_vs_L5_over_train_nn": float((imgs.flatten(1) - x_ref).norm(dim=1).mean()) / max(nn_med, 1e-12),
               "weight_corr_with_L1": float(np.mean(per_L[L]["w_corr"])), "lam_spread_tau": float(np.mean(per_L[L]["lam_spread"])),
               "fallback_steps": per_L[L]["fallback"]}
        if cfg.fd:
            row["fd"] = frechet(imgs, cfg, f"FP VE paper preset, L={L}")
        rows.append(row)
    return {"rows": rows, "M": fcfg.M, "ref_L": ref_L}


def fig2_inits(cfg: OperatorSamplerConfig, setup: ImageSetup, kind: str = "ve") -> dict:
    """Fig. 2: structured initialisations (blocks, edges, blobs) and what the chain makes of them (M = fig2_M).

    Per image: distance of the output to its initialisation and to the nearest reference, as a measure of
    how much the initial structure survives.
    """
    fcfg = cfg.fp_config(kind, "paper", M=cfg.fig2_M, init="structured", n_per_group=cfg.fig2_images)
    g = torch.Generator().manual_seed(cfg.seed + 123)
    lo, hi = (0.0, 1.0) if kind == "ve" else (-1.0, 1.0)
    x0, kinds = fp.structured_init(cfg.fig2_images, setup.shape, lo, hi, g)
    out = {}
    for preset in ("paper", "recommended"):
        c = cfg.fp_config(kind, preset, M=cfg.fig2_M, init="structured", n_per_group=cfg.fig2_images)
        res = fp.sample_group(setup.scores[kind], setup.sdes[kind], setup.pools[kind], c, group=0, x0=x0)
        xf = res.samples.double()
        d_init = (xf - x0.reshape(len(x0), -1)).norm(dim=1)
        d_ref, _ = fp.nearest_neighbours(xf, torch.as_tensor(res.density.refs), k=1)
        out[preset] = {"images": to_library(res.samples, kind, setup.shape), "d_init": d_init.numpy(), "d_ref": d_ref[:, 0].numpy()}
    return {"inits": to_library(x0.reshape(len(x0), -1), kind, setup.shape), "kinds": kinds, "runs": out, "M": cfg.fig2_M,
            "config": to_dict(fcfg)}


def ablations(cfg: OperatorSamplerConfig, setup: ImageSetup) -> dict:
    """E4: one group each of the options the paper leaves open (VE), against the paper preset.

    ``zeta_s``, ``eta``, ``t*``, coefficients, convention, literal index, negative-density policy, output,
    initialisation, and the uniform-weight KDE control.  Tracks fallbacks, memorisation and diversity.
    """
    variants = {
        "paper preset": {},
        "recommended preset": {"preset": "recommended"},
        "uniform-weight KDE (control)": {"weights": "uniform"},
        "stationary only (L = 1)": {"weights": "stationary"},
        "zeta_s = zeta (no sharper sampling kernel)": {"zeta_s": 22.0},
        "eta = 1 (Algorithm 1)": {"eta": 1.0},
        "t* = 0.3 (perturbed references)": {"t_star": 0.3},
        "coeffs = biorthogonal": {"coeffs": "biorthogonal"},
        "literal index (Koopman vectors)": {"literal_index": True, "exp_sign": "minus"},
        "convention = paper_literal, e^{-lam T}": {"convention": "paper_literal", "exp_sign": "minus"},
        "neg_policy = abs": {"neg_policy": "abs"},
        "output = tweedie": {"output": "tweedie"},
        "init = gaussian (paper's mode-collapse case)": {"init": "gaussian"},
    }
    rows = []
    for name, ov in variants.items():
        ov = dict(ov)
        preset = ov.pop("preset", "paper")
        fcfg = cfg.fp_config("ve", preset, n_per_group=cfg.ablation_images, **ov)
        run = fp_run(setup, fcfg, 1, cfg.ablation_images)
        row = {"variant": name, "preset": fcfg.preset, "mean_pairwise": _mean_pairwise(run["images"]),
               "distinct_nn": run["memorisation"]["distinct_nn"], "d_train_median": run["memorisation"]["d_train_median"],
               "ratio_to_train_nn": run["memorisation"]["ratio_to_train_nn"], "frac_copies": run["memorisation"]["frac_copies"],
               "fallback_frac": run["report"]["fallback_steps"] / (cfg.ablation_images * cfg.J),
               "nonfinite_samples": run["report"]["nonfinite_samples"], **{k: run["operator"].get(k) for k in ("n_eff_prior", "n_eff_weights", "frac_negative_w")}}
        if cfg.fd:
            row["fd"] = frechet(run["images"], cfg, f"FP VE {name}")
        rows.append(row)
    return {"rows": rows}


def extra_datasets(cfg: OperatorSamplerConfig) -> dict:
    """E3 on MNIST / CIFAR-10 subsets where ``$KL_REPRO_DATA`` has them: one group per SDE and preset, grids and memorisation.

    CIFAR-10 uses the paper's own bandwidths (``zeta = 22``, ``zeta_s = 5`` in ``[0, 1]``, ``bandwidth="absolute"``);
    MNIST the median-scaled ones.  Returns ``{"<dataset>": {...}}`` or notes that a data set is absent.
    """
    out = {}
    for name in cfg.extra_datasets:
        data = load_pool(name, cfg.extra_pool, resolution=28 if name == "mnist" else None)
        if data is None:
            out[name] = {"available": False}
            continue
        setup = ImageSetup(name, data[0], None, {k: to_model(data[0], k) for k in ("ve", "vp")}, {}, {"ve": VESDE(N=cfg.pc_N), "vp": VPSDE(N=cfg.pc_N)})
        setup.scores = {k: IdealScore(setup.pools[k], setup.sdes[k]) for k in ("ve", "vp")}
        res = {"available": True, "pool": len(data[0]), "runs": {}}
        bw = "absolute" if name == "cifar10" else "median"
        for kind in ("ve", "vp"):
            for preset in ("paper", "recommended"):
                fcfg = cfg.fp_config(kind, preset, M=cfg.extra_M, n_per_group=cfg.extra_images, bandwidth=bw)
                run = fp_run(setup, fcfg, 1, cfg.extra_images)
                res["runs"][f"{kind}_{preset}"] = {"images": run["images"], "memorisation": run["memorisation"], "operator": run["operator"],
                                                   "t_setup": run["t_setup_per_group"], "t_sampling": run["t_sampling_per_group"],
                                                   "fallback_steps": run["report"]["fallback_steps"], "lam_top": run["lam_top"]}
        out[name] = res
    return out
