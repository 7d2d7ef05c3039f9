"""Paper B's image experiments at the scale of a profile: Tables 1-3, Fig. 2, the ablations E4, E3's extra data sets.

Every sampler config derives from one base :class:`~kl_repro.paper_b.fp_config.FPConfig` (the paper's
hyperparameters, median-scaled bandwidths) by :func:`~kl_repro.paper_b.fp_config.fp_variant`.  Both
samplers use the same score model of the :class:`~kl_repro.paper_b.image_data.ImageSetup` (a network
trained by DSM, or the ideal score as the exact-score reference) on the same machine, so only ratios
measured side by side mean anything (the Deviations page).  ``fd``: a :class:`~kl_repro.paper_b.image_runs.FrechetSpec`, or None
to skip the Frechet distances.  Times are seconds.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from kl_repro.core.config import to_dict
from kl_repro.core.images import to_float
from kl_repro.paper_b.fp_config import FPConfig, fp_variant
from kl_repro.paper_b.fp_operator import density_from_operator, fit_operator
from kl_repro.paper_b.groups import group_references, sample_group
from kl_repro.paper_b.image_data import ImageSetup, load_pool, setup_from_images, to_library
from kl_repro.paper_b.image_runs import FrechetSpec, diversity, fp_group_times, fp_run, mean_pairwise, pc_run, timed
from kl_repro.paper_b.inits import initial_points, structured_init
from kl_repro.paper_b.langevin import run_chains
from kl_repro.paper_b.memorisation import memorisation_report, nearest_neighbours
from kl_repro.paper_b.pc import pc_preset, pc_sample

__all__ = ["ABLATIONS", "table1", "fd_seed_spread", "table2", "table3", "fig2_inits", "ablations", "extra_datasets"]

IS_NOTE = "not computed: Inception logits need torch-fidelity's own weights (not available offline)"


def _pc_row(setup: ImageSetup, kind: str, pc_name: str, n: int, batch: int, seed: int, fd) -> tuple[dict, torch.Tensor]:
    pc = pc_run(setup, kind, pc_name, n, batch, seed)
    t_pc1 = timed(lambda: pc_sample(setup.scores[kind], setup.sdes[kind], 1, pc_preset(pc_name), torch.Generator().manual_seed(1)))
    row = {"method": f"PC ({kind.upper()}, {pc['label']})", "sde": kind, "preset": "baseline", "score": setup.score_label,
           "time_1": t_pc1, "time_100": pc["t_batch"] * 100 / batch, "nfe": pc["nfe"], "n_samples": len(pc["images"]),
           "memorisation": pc["memorisation"], "diversity": diversity(pc["images"])}
    if fd:
        row["fd"] = fd(pc["images"], row["method"])
    return row, pc["images"]


def _fp_row(setup: ImageSetup, fcfg: FPConfig, fd) -> tuple[dict, torch.Tensor]:
    run = fp_run(setup, fcfg, fcfg.n_groups, fcfg.n_per_group)
    one = fp_group_times(setup, fcfg, 1, group=10_000)
    per_img = run["t_sampling_per_group"] / fcfg.n_per_group
    row = {"method": f"FP ({fcfg.sde.upper()}, preset {fcfg.preset})", "sde": fcfg.sde, "preset": fcfg.preset,
           "score": setup.score_label, "diversity": diversity(run["images"], group_size=fcfg.n_per_group),
           "time_1": one["setup"] + one["sampling"], "time_1_no_setup": one["sampling"],
           "time_100": run["t_setup_per_group"] + per_img * 100, "time_100_no_setup": per_img * 100,
           "t_setup_group": run["t_setup_per_group"], "n_samples": len(run["images"]),
           "fallback_steps": run["report"]["fallback_steps"], "chains_with_fallback": run["report"]["chains_with_fallback"],
           "nonfinite_samples": run["report"]["nonfinite_samples"], "memorisation": run["memorisation"], "operator": run["operator"],
           "config": to_dict(fcfg)}
    if fd:
        row["fd"] = fd(run["images"], row["method"], group_size=fcfg.n_per_group)  # groups resampled as clusters
    return row, run["images"]


def _add_speedups(rows: list[dict]) -> None:
    """Per-image time ratios PC / FP (with and without the FP set-up), per SDE, in place."""
    for kind in sorted({r["sde"] for r in rows}):
        pc_row = next(r for r in rows if r["sde"] == kind and r["preset"] == "baseline")
        for r in rows:
            if r["sde"] == kind and r["preset"] != "baseline":
                r["speedup_1"] = pc_row["time_1"] / r["time_1"]
                r["speedup_1_no_setup"] = pc_row["time_1"] / r["time_1_no_setup"]
                r["speedup_100"] = pc_row["time_100"] / r["time_100"]
                r["speedup_100_no_setup"] = pc_row["time_100"] / r["time_100_no_setup"]


def table1(setup: ImageSetup, base: FPConfig, pc_images: int, fd: FrechetSpec | None = None, sdes=("ve", "vp")) -> dict:
    """Paper B's Table 1 on this machine: FP (paper and recommended presets) against PC on the same score model.

    The score model is ``setup``'s (the ideal score, or a trained network: :func:`~.image_data.with_scores`);
    every row names it under ``"score"``.  FP: ``base.n_groups`` groups of ``base.n_per_group``; PC:
    ``pc_images`` images; per SDE in ``sdes``.  Times for 1 and 100 images (FP with and without set-up),
    FD/KD on the sampled images (with bootstrap resamples), diversity, the memorisation report, and the
    per-image time ratios PC / FP.  IS needs Inception logits that are not available offline; it is
    reported as such.
    """
    rows, images = [], {}
    n100 = min(100, base.n_per_group)
    for kind, pc_name in (("ve", "ve_pc1000"), ("vp", "vp_pc1000")):
        if kind not in sdes:
            continue
        row, images[f"pc_{kind}"] = _pc_row(setup, kind, pc_name, pc_images, n100, base.seed, fd)
        rows.append(row)
        for preset in ("paper", "recommended"):
            row, images[f"fp_{kind}_{preset}"] = _fp_row(setup, fp_variant(base, preset, sde=kind), fd)
            rows.append(row)
    floor = None
    if fd and setup.test is not None:
        floor = fd(to_float(setup.test), f"held-out {setup.dataset} test images (floor)")
    _add_speedups(rows)
    return {"rows": rows, "images": images, "fd_floor": floor, "IS": IS_NOTE, "score": setup.score_label,
            "networks": setup.networks}


def fd_seed_spread(setup: ImageSetup, base: FPConfig, extra_seeds, fd: FrechetSpec, first: dict | None = None) -> dict | None:
    """The Frechet distance of one FP set (VE, paper preset, ``base``'s groups) drawn with ``base.seed`` and each of ``extra_seeds``.

    ``first``: Table 1's row of that set (seed ``base.seed``), reused instead of drawn again.  The spread over
    seeds is the metric's noise at this sample count, beside the bootstrap spread of one set (``boot_std``)
    that the verdicts' intervals rest on.  None when the sets are too small for a Frechet distance.
    """
    vals, boot, metric = [], [], None
    if first is not None and not first.get("fd"):
        return None
    if first is not None:
        vals.append(first["fd"]["value"])
        boot.append(first["fd"].get("boot_std"))
    for seed in extra_seeds:
        res = fd(fp_run(setup, fp_variant(base, "paper", sde="ve", seed=seed), base.n_groups, base.n_per_group)["images"],
                 f"FP VE paper preset, seed {seed}", group_size=base.n_per_group)
        if res is None:  # too few images for a Frechet distance
            return None
        vals.append(res["value"])
        boot.append(res.get("boot_std"))
        metric = res["metric"]
    return {"seeds": [base.seed] * (first is not None) + list(extra_seeds), "values": vals,
            "std_over_seeds": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "boot_std": [b for b in boot if b is not None], "n_samples": base.n_groups * base.n_per_group,
            "metric": metric, "score": setup.score_label}


def table2(setup: ImageSetup, base: FPConfig, M_values, groups: int, per_group: int, fd: FrechetSpec | None = None) -> dict:
    """Table 2 in shape: the effect of M (VE, paper preset): FD, diversity, times, and the two candidate mechanisms.

    Candidate mechanism (i): the VE prior projection is dominated by one prior draw (``n_eff_prior``) and
    weights concentrate as M grows (``n_eff_weights / M``); diversity is the mean pairwise distance of the
    samples and the number of distinct nearest training images.
    """
    rows = []
    for M in M_values:
        run = fp_run(setup, fp_variant(base, "paper", sde="ve", M=M, n_per_group=per_group), groups, per_group)
        per_img = run["t_sampling_per_group"] / per_group
        row = {"M": M, "time_1": run["t_setup_per_group"] + per_img, "time_100": run["t_setup_per_group"] + 100 * per_img,
               "time_100_no_setup": 100 * per_img, "n_samples": len(run["images"]), "mean_pairwise": mean_pairwise(run["images"]),
               "distinct_nn": run["memorisation"]["distinct_nn"], "d_train_median": run["memorisation"]["d_train_median"],
               **{k: run["operator"].get(k) for k in ("n_eff_prior", "n_eff_weights", "frac_negative_w")},
               "fallback_steps": run["report"]["fallback_steps"],
               "t_sampling_groups": [100 * g.t_sampling / per_group for g in run["groups"]]}  # seconds per 100 images, per group
        row["n_eff_weights_over_M"] = row["n_eff_weights"] / M if row["n_eff_weights"] else None
        if fd:
            row["fd"] = fd(run["images"], f"FP VE paper preset, M={M}", group_size=per_group)
        rows.append(row)
    return {"rows": rows, "score": setup.score_label}


def _table3_group(setup: ImageSetup, fcfg: FPConfig, L_values, per_group: int, grp: int, per_L: dict) -> float:
    """One group of Table 3: one operator, every L from the same inits and noise; appends to ``per_L``; returns set-up seconds."""
    score, sde, pool = setup.scores["ve"], setup.sdes["ve"], setup.pools["ve"]
    t0 = time.perf_counter()
    X, _, g = group_references(pool, sde, fcfg, grp)
    eig, log_s, rep = fit_operator(score, sde, X, fcfg, max(L_values) + 2, g)
    t_setup = time.perf_counter() - t0
    x0 = initial_points(fcfg, per_group, setup.shape, pool, g)
    w1 = density_from_operator(eig, log_s, fcfg, rep, 1).w
    for L in L_values:
        dens = density_from_operator(eig, log_s, fcfg, rep, L)
        x, stats, t = run_chains(dens, x0, fcfg, torch.Generator().manual_seed(fcfg.seed * 7919 + grp))
        per_L[L]["x"].append(x)
        per_L[L]["t"].append(t)
        per_L[L]["w_corr"].append(float(np.corrcoef(dens.w, w1)[0, 1]))
        per_L[L]["lam_spread"].append(float(abs(eig.lam[L - 1].real - eig.lam[0].real) * fcfg.tau))
        per_L[L]["fallback"] += int(stats["n_fallback"].sum())
    return t_setup


def table3(setup: ImageSetup, base: FPConfig, L_values, groups: int, per_group: int, fd: FrechetSpec | None = None) -> dict:
    """Table 3 in shape: the effect of L (VE, paper preset, ``M = base.M``) with common random numbers.

    One operator per group serves every L (same references, prior draws, initialisations and Langevin
    noise), so differences are due to L alone.  Reports FD, the mean displacement of each sample from
    its L = 5 counterpart (relative to the training NN distance), the correlation of the weights with
    the L = 1 weights, and the spread of the top-L eigenvalues ``|lam_L - lam_1| tau`` (candidate mechanism (ii): weights dominated by ``u_1``).
    """
    fcfg = fp_variant(base, "paper", sde="ve", n_per_group=per_group)
    per_L = {L: {"x": [], "w_corr": [], "t": [], "lam_spread": [], "fallback": 0} for L in L_values}
    t_setup = [_table3_group(setup, fcfg, L_values, per_group, grp, per_L) for grp in range(groups)]
    train = setup.train_library("ve")
    nn_med = memorisation_report(train[:2], train)["train_nn_median"]
    ref_L = 5 if 5 in per_L else L_values[0]
    x_ref = to_library(torch.cat(per_L[ref_L]["x"]), "ve", setup.shape).flatten(1)
    rows = []
    for L in L_values:
        imgs = to_library(torch.cat(per_L[L]["x"]), "ve", setup.shape)
        per_img = float(np.mean(per_L[L]["t"])) / per_group
        row = {"L": L, "time_1": float(np.mean(t_setup)) + per_img, "time_100": float(np.mean(t_setup)) + 100 * per_img,
               "time_100_no_setup": 100 * per_img, "n_samples": len(imgs),
               "displacement_vs_L5_over_train_nn": float((imgs.flatten(1) - x_ref).norm(dim=1).mean()) / max(nn_med, 1e-12),
               "weight_corr_with_L1": float(np.mean(per_L[L]["w_corr"])), "lam_spread_tau": float(np.mean(per_L[L]["lam_spread"])),
               "fallback_steps": per_L[L]["fallback"]}
        if fd:
            row["fd"] = fd(imgs, f"FP VE paper preset, L={L}", group_size=per_group)
        rows.append(row)
    return {"rows": rows, "M": fcfg.M, "ref_L": ref_L, "score": setup.score_label}


def fig2_inits(setup: ImageSetup, base: FPConfig, M: int, n_images: int, kind: str = "ve") -> dict:
    """Fig. 2: ``n_images`` structured initialisations (blocks, edges, blobs) and what the chain makes of them (``M`` references).

    Per image: distance of the output to its initialisation and to the nearest reference, as a measure of
    how much the initial structure survives.
    """
    fcfg = fp_variant(base, "paper", sde=kind, M=M, init="structured", n_per_group=n_images)
    g = torch.Generator().manual_seed(base.seed + 123)
    lo, hi = (0.0, 1.0) if kind == "ve" else (-1.0, 1.0)
    x0, kinds = structured_init(n_images, setup.shape, lo, hi, g)
    out = {}
    for preset in ("paper", "recommended"):
        c = fp_variant(base, preset, sde=kind, M=M, init="structured", n_per_group=n_images)
        res = sample_group(setup.scores[kind], setup.sdes[kind], setup.pools[kind], c, group=0, x0=x0)
        xf = res.samples.double()
        d_init = (xf - x0.reshape(len(x0), -1)).norm(dim=1)
        d_ref, _ = nearest_neighbours(xf, torch.as_tensor(res.density.refs), k=1)
        out[preset] = {"images": to_library(res.samples, kind, setup.shape), "d_init": d_init.numpy(), "d_ref": d_ref[:, 0].numpy()}
    return {"inits": to_library(x0.reshape(len(x0), -1), kind, setup.shape), "kinds": kinds, "runs": out, "M": M,
            "config": to_dict(fcfg), "score": setup.score_label}


#: E4's variants: name -> overrides of the paper preset ("preset" names another preset)
ABLATIONS = {
    "paper preset": {},
    "recommended preset": {"preset": "recommended"},
    "uniform-weight KDE (control)": {"weights": "uniform"},
    "stationary only (L = 1)": {"weights": "stationary"},
    "zeta_s = zeta (no sharper sampling kernel)": {"zeta_s": 22.0},
    "eta = 1 (Algorithm 1)": {"eta": 1.0},
    "t* = 0.3 (perturbed references)": {"t_star": 0.3},
    "coeffs = biorthogonal": {"coeffs": "biorthogonal"},
    "literal index (Koopman vectors)": {"literal_index": True, "exp_sign": "minus"},
    "convention = paper_literal, e^{-lam tau}": {"convention": "paper_literal", "exp_sign": "minus"},
    "neg_policy = abs": {"neg_policy": "abs"},
    "output = tweedie": {"output": "tweedie"},
    "init = gaussian (paper's mode-collapse case)": {"init": "gaussian"},
}


def ablations(setup: ImageSetup, base: FPConfig, n_images: int, fd: FrechetSpec | None = None) -> dict:
    """E4: one group of ``n_images`` for each option the paper leaves open (VE, :data:`ABLATIONS`), against the paper preset.

    ``zeta_s``, ``eta``, ``t*``, coefficients, convention, literal index, negative-density policy, output,
    initialisation, and the uniform-weight KDE control.  Tracks fallbacks, memorisation and diversity.
    """
    rows = []
    for name, ov in ABLATIONS.items():
        ov = dict(ov)
        preset = ov.pop("preset", "paper")
        fcfg = fp_variant(base, preset, sde="ve", n_per_group=n_images, **ov)
        run = fp_run(setup, fcfg, 1, n_images)
        mem = run["memorisation"]
        div = diversity(run["images"])
        row = {"variant": name, "preset": fcfg.preset, "score": setup.score_label, "mean_pairwise": div["mean_pairwise"],
               "diversity_boot": div["boot"],
               "distinct_nn": mem["distinct_nn"], "d_train_median": mem["d_train_median"],
               "ratio_to_train_nn": mem["ratio_to_train_nn"], "frac_copies": mem["frac_copies"],
               "fallback_frac": run["report"]["fallback_steps"] / (n_images * fcfg.J),
               "nonfinite_samples": run["report"]["nonfinite_samples"], **{k: run["operator"].get(k) for k in ("n_eff_prior", "n_eff_weights", "frac_negative_w")}}
        if fd:
            row["fd"] = fd(run["images"], f"FP VE {name}")
        rows.append(row)
    return {"rows": rows}


def _extra_runs(setup: ImageSetup, base: FPConfig, M: int, n_images: int, bandwidth: str) -> dict:
    runs = {}
    for kind in ("ve", "vp"):
        for preset in ("paper", "recommended"):
            fcfg = fp_variant(base, preset, sde=kind, M=M, n_per_group=n_images, bandwidth=bandwidth)
            run = fp_run(setup, fcfg, 1, n_images)
            runs[f"{kind}_{preset}"] = {"images": run["images"], "memorisation": run["memorisation"], "operator": run["operator"],
                                        "t_setup": run["t_setup_per_group"], "t_sampling": run["t_sampling_per_group"],
                                        "fallback_steps": run["report"]["fallback_steps"], "lam_top": run["lam_top"]}
    return runs


def extra_datasets(names, pool: int, base: FPConfig, M: int, n_images: int, pc_N: int = 1000) -> dict:
    """E3 on MNIST / CIFAR-10 subsets where ``$KL_REPRO_DATA`` has them: one group per SDE and preset, grids and memorisation.

    ``pool`` training images per data set, ``M`` references, ``n_images`` per group.  CIFAR-10 uses the
    paper's own bandwidths (``zeta = 22``, ``zeta_s = 5`` in ``[0, 1]``, ``bandwidth="absolute"``); MNIST
    the median-scaled ones.  Returns ``{"<dataset>": {...}}`` or notes that a data set is absent.
    """
    out = {}
    for name in names:
        data = load_pool(name, pool, resolution=28 if name == "mnist" else None)
        if data is None:
            out[name] = {"available": False}
            continue
        setup = setup_from_images(name, data[0], None, pc_N)
        bw = "absolute" if name == "cifar10" else "median"
        out[name] = {"available": True, "pool": len(data[0]), "runs": _extra_runs(setup, base, M, n_images, bw)}
    return out
