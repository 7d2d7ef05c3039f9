"""Experiments E1 and E2: the operator on problems with known answers.

* E1 (check T4, Methods B.5): propagate ``p_T = N(1.5, 0.5^2)`` under OU with every coefficient rule
  of Methods B.3 and compare with the exact density.
* E2: the FP sampler on the 2-D mixture with exact VE scores; which distribution it targets
  (Methods B.4: the top eigen-density is ``~ p_{t*}^2``, Langevin with noise ``eta`` targets
  ``p0^(1/eta^2)``), against PC on the same score.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kl_repro.paper_b import gedmd
from kl_repro.paper_b.fp_config import fp_preset
from kl_repro.paper_b.fp_operator import coefficients, mode_weights, prior_log_mass
from kl_repro.paper_b.groups import sample_group
from kl_repro.paper_b.kernels import gram
from kl_repro.paper_b.pc import pc_preset, pc_sample
from kl_repro.paper_b.scores import GaussianMixture, MixtureScore
from kl_repro.paper_b.sde import VESDE
from kl_repro.paper_b.spectra import smooth_on_grid, square_grid

__all__ = ["E1_RULES", "e1_ou_propagation", "e2_mixture_sampling"]

#: E1's coefficient rules: name -> (coeffs, exp_sign, literal_index)
E1_RULES = {"biorthogonal, e^{+lam tau}": ("biorthogonal", "plus", False), "paper (14), e^{-lam tau}": ("paper", "minus", False),
            "paper (14), e^{+lam tau}": ("paper", "plus", False), "literal index (Koopman vectors)": ("paper", "minus", True)}


def _propagated(res: gedmd.GEDMD, log_s, Kx, h: float, L: int, tau: float, rule) -> np.ndarray:
    """The density after time ``tau`` with ``L`` modes under one coefficient ``rule``, normalised on the grid."""
    coeffs, sign, literal = rule
    U, V = (res.V, res.U) if literal else (res.U, res.V)
    c = coefficients(U[:, :L], V[:, :L], res.pairing[:L], log_s, coeffs)
    dens = Kx @ mode_weights(res.lam[:L], U[:, :L], c, tau, sign)
    return dens / (dens.sum() * h)


def e1_ou_propagation(M: int = 500, n_prior: int = 4000, seed: int = 0, zeta: float = 1.0) -> dict:
    """E1 / T4: L1 distance of the propagated density to the exact one, for every rule, ``tau`` in {0.5, 1}, ``L`` in {1, 3, 5}.

    Rules (:data:`E1_RULES`): biorthogonal with ``e^{+lam tau}``; the paper's eq. (14) with ``e^{-lam tau}`` and
    ``e^{+lam tau}``; the literal index reading (Koopman vectors as densities).  Exact (kernel-smoothed):
    ``N(1.5 e^-tau, 0.25 e^-2tau + 1 - e^-2tau + zeta^2)``.
    """
    X = np.random.default_rng(seed).standard_normal((M, 1))
    res = gedmd.fit(X, -X, 2.0, zeta, n_keep=8)
    Y = np.random.default_rng(seed + 1).normal(1.5, 0.5, (n_prior, 1))
    log_s, _ = prior_log_mass(res.X, Y, zeta)
    xs = np.linspace(-6, 7, 1301)
    h = xs[1] - xs[0]
    Kx = gram(xs[:, None], res.X, zeta)
    rows, curves = [], {}
    for tau in (0.5, 1.0):
        var = 0.25 * math.exp(-2 * tau) + 1 - math.exp(-2 * tau) + zeta**2
        exact = np.exp(-(xs - 1.5 * math.exp(-tau)) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
        for L in (1, 3, 5):
            row = {"tau": tau, "L": L}
            for name, rule in E1_RULES.items():
                dens = _propagated(res, log_s, Kx, h, L, tau, rule)
                row[name] = float(np.abs(dens - exact).sum() * h)
                if tau == 0.5 and L == 5:
                    curves[name] = dens
            rows.append(row)
            if tau == 0.5 and L == 5:
                curves["exact"] = exact
    return {"rows": rows, "x": xs, "curves": curves, "lam": res.lam[:6].real, "M": M, "n_prior": n_prior}


#: E2's FP runs at the main sigma*: (preset, eta, init, weights); the metastable case runs the second only
E2_RUNS = [("paper", 1.0, "solid", "operator"), ("recommended", 1.0, "solid", "operator"), ("paper", 0.2, "solid", "operator"),
           ("recommended", 0.2, "solid", "operator"), ("recommended", 0.2, "gaussian", "operator"), ("recommended", 1.0, "solid", "uniform")]


def _e2_predictions(mixture: GaussianMixture, sde, t_star: float, zeta: float) -> tuple[dict, np.ndarray]:
    """Predicted mode masses: ``w``, ``w^2``, ``p_t*`` and ``p_t*^2 * N(0, zeta_s^2)`` (Voronoi cells of the means)."""
    w = np.array(mixture.weights) / sum(mixture.weights)
    xs, G = square_grid(161, 6.0)
    h = xs[1] - xs[0]
    voronoi = torch.cdist(torch.from_numpy(G), torch.tensor(mixture.means, dtype=torch.float64)).argmin(1).numpy()

    def masses(f):
        return np.bincount(voronoi, weights=f, minlength=3) / f.sum()

    p_t = np.exp(mixture.log_prob(torch.from_numpy(G), t_star, sde).numpy())
    return {"data weights w": w, "w^2 (separated modes)": w**2 / (w**2).sum(),
            "p_t* (mass)": masses(p_t), "p_t*^2 * N(0, zeta_s^2) (eta = 1 target)": masses(smooth_on_grid(p_t**2, 161, h, zeta))}, w


def _mode_freq(mixture: GaussianMixture, x: torch.Tensor) -> np.ndarray:
    return np.bincount(mixture.component_of(x.double()).numpy(), minlength=3) / x.shape[0]


def _e2_fp_run(mixture, sde, score, pool, run, sigma: float, tag: str, p: dict) -> tuple[dict, str, np.ndarray]:
    """One FP run of E2 (``run`` = preset, eta, init, weights) at ``sigma* = sigma``: its row, name and samples."""
    preset, eta, init, weights = run
    c = fp_preset(preset, M=p["M"], L=p["L"], zeta=p["zeta"], zeta_s=p["zeta"], step_size=p["step_size"], J=p["J"],
                  eta=eta, t_star=sde.t_of_sigma(sigma), n_per_group=p["chains"], init=init, weights=weights, seed=p["seed"])
    res = sample_group(score, sde, pool, c, box=(np.array([-4.0, -2.0]), np.array([4.0, 4.0])))
    rep = res.density.report
    name = f"FP {preset}, eta={eta:g}, init={init}" + (", uniform-weight KDE" if weights == "uniform" else "")
    row = {"case": tag, "sigma_star": sigma, "sampler": name, "freq": _mode_freq(mixture, res.samples),
           "fallback_frac": float(res.stats["n_fallback"].sum() / (p["chains"] * p["J"])),
           "frac_negative_w": rep.get("frac_negative_w", 0.0),
           "lam_over_a": np.real(rep["top"][:4]) / rep["a"] if "top" in rep else None,
           "cluster_size": rep.get("cluster_size"), "t_setup": res.t_setup, "t_sampling": res.t_sampling}
    return row, name, res.samples.double().numpy()


def e2_mixture_sampling(*, M: int, L: int, zeta: float, step_size: float, J: int, chains: int, sigma_star: float,
                        sigma_metastable: float, pc_N: int, seed: int = 0) -> dict:
    """E2: the FP sampler on the 2-D mixture with exact VE scores; what it targets, against PC.

    At ``sigma* = sigma_star``: mode frequencies of ``chains`` FP chains of ``J`` steps (presets
    ``paper``/``recommended``, ``eta`` in {1, 0.2}, box and Gaussian inits, :data:`E2_RUNS`), the
    uniform-weight KDE control and PC with ``pc_N`` steps, against the data weights ``w``, ``w^2``
    (separated-modes limit of ``pi ~ p^2``) and the masses of ``p_{t*}^2 * N(0, zeta^2)`` (the ideal
    target at ``eta = 1``).  Also the metastable case ``sigma_metastable``, where the top eigenvector is
    not identifiable.  ``M`` references, bandwidth ``zeta`` (= ``zeta_s``), Langevin ``step_size``.
    """
    mixture, sde = GaussianMixture(), VESDE()
    pool, _ = mixture.sample(max(5 * M, 2000), torch.Generator().manual_seed(seed + 7))
    score = MixtureScore(mixture, sde)
    preds, w = _e2_predictions(mixture, sde, sde.t_of_sigma(sigma_star), zeta)
    p = {"M": M, "L": L, "zeta": zeta, "step_size": step_size, "J": J, "chains": chains, "seed": seed}
    rows, samples = [], {}
    for sigma, tag in ((sigma_star, "main"), (sigma_metastable, "metastable")):
        for run in (E2_RUNS if tag == "main" else E2_RUNS[1:2]):
            row, name, x = _e2_fp_run(mixture, sde, score, pool, run, sigma, tag, p)
            rows.append(row)
            samples[(tag, name)] = x
    pc_sde = VESDE(N=pc_N)
    x_pc, nfe = pc_sample(MixtureScore(mixture, pc_sde), pc_sde, chains, pc_preset("ve_pc1000"),
                          torch.Generator().manual_seed(seed + 11), dtype=torch.float64)
    rows.append({"case": "main", "sigma_star": None, "sampler": f"PC{pc_N} (reverse SDE, exact score)", "freq": _mode_freq(mixture, x_pc),
                 "fallback_frac": 0.0, "nfe": nfe})
    samples[("main", "PC")] = x_pc.numpy()
    return {"rows": rows, "predictions": preds, "samples": samples, "means": mixture.means, "weights": w.tolist(),
            "sigma_star": sigma_star, "chains": chains, "J": J}
