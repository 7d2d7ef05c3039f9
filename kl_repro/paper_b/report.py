"""Paper B's artefacts: our numbers beside the paper's, and one verdict sentence per claim (floor 6).

Each ``artefact_*`` function turns the results of a :mod:`kl_repro.paper_b.experiments` driver into the
payload of :func:`kl_repro.core.store.save_artefact`: ``ours`` (with profile, sample counts, seeds, presets),
``paper`` (values read from ``paper_values/paper_b.toml`` with their source) and ``verdict``.  Verdicts
are computed from the numbers (thresholds and comparisons), never written in advance.
"""

from __future__ import annotations

import numpy as np

from kl_repro.paper_b.experiments import EigenSpectraConfig, OperatorSamplerConfig

__all__ = [
    "verdict_speed",
    "verdict_quality",
    "verdict_memorisation",
    "verdict_targets",
    "artefact_e1",
    "artefact_e2",
    "artefact_e3",
    "artefact_e4",
    "artefact_table1",
    "artefact_table2",
    "artefact_table3",
    "artefact_fig1",
    "artefact_fig2",
    "artefacts_spectra",
]


def _fd(row) -> float | None:
    return None if not row.get("fd") else float(row["fd"]["value"])


def _mname(rows) -> str:
    """The Frechet metric's name in ``rows`` (``FD_clf`` on digits, ``FID`` with Inception features)."""
    return next((r["fd"]["metric"] for r in rows if r.get("fd")), "FD")


def _json_rows(rows, drop=("images", "x0", "groups")) -> list[dict]:
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if k in drop:
                continue
            if isinstance(v, np.ndarray):
                v = np.real_if_close(v).tolist() if np.iscomplexobj(v) else v.tolist()
                v = [complex(z) if isinstance(z, complex) else z for z in v]
                v = [str(z) if isinstance(z, complex) else z for z in v]
            d[k] = v
        out.append(d)
    return out


def verdict_speed(t1: dict, paper: dict) -> str:
    """One sentence on the paper's ~100x (to 260x) per-image speed-up, from Table 1's measured ratios."""
    ve = next(r for r in t1["rows"] if r["sde"] == "ve" and r["preset"] == "paper")
    pc = next(r for r in t1["rows"] if r["sde"] == "ve" and r["preset"] == "baseline")
    claim = paper["claims"]["speedup"]
    verdict = "reproduced" if ve["speedup_1"] >= 100 else ("not reproduced" if ve["speedup_1"] < 10 else "partly reproduced")
    return (f"Speed ({verdict}): per-image time PC / FP on this CPU with the same ideal score (VE): {ve['speedup_1']:.3g}x for one image "
            f"with the FP set-up ({ve['speedup_1_no_setup']:.3g}x without), {ve['speedup_100']:.3g}x for 100 images "
            f"({ve['speedup_100_no_setup']:.3g}x without); the paper reports {claim['speedup_1_image'][0]}x and "
            f"{claim['speedup_100_images'][0]}x (VE, U-Net scores, 3090Ti). An ideal score is itself a kernel sum, so one PC step costs "
            f"about one Langevin step here and the ratio is bounded by the step counts (PC {pc['nfe']} NFEs against "
            f"{ve['config']['J']} Langevin steps plus {ve['config']['M']} score calls); the paper's factor comes from replacing U-Net "
            f"evaluations by kernel sums (bench/bench_paper_b.py estimates that case).")


def verdict_quality(t1: dict) -> str:
    """One sentence on the FID cost, from the Frechet distance of FP against PC on the same score (FD_clf is never called FID)."""
    name = _mname(t1["rows"])
    parts = []
    for kind in ("ve", "vp"):
        pc = next(r for r in t1["rows"] if r["sde"] == kind and r["preset"] == "baseline")
        fps = [r for r in t1["rows"] if r["sde"] == kind and r["preset"] != "baseline"]
        if _fd(pc) is None:
            continue
        fp_text = ", ".join("%.3g (%s)" % (_fd(r), r["preset"]) for r in fps)
        parts.append(f"{kind.upper()}: {name} {fp_text} against {_fd(pc):.3g} for PC")
    if not parts:
        return "Quality: no Frechet distance was computed in this profile."
    floor = t1.get("fd_floor")
    worse = all(_fd(r) > _fd(next(p for p in t1["rows"] if p["sde"] == r["sde"] and p["preset"] == "baseline"))
                for r in t1["rows"] if r["preset"] != "baseline" and _fd(r) is not None)
    return (f"Quality cost ({'same direction as the paper' if worse else 'not the paper direction'}): " + "; ".join(parts)
            + ("; held-out test images score %.3g (the floor)" % floor["value"] if floor else "")
            + (". FD_clf is a Frechet distance in a small classifier's features, not FID" if name == "FD_clf" else "")
            + "; the paper's FID is 42-44 against 2.2-2.4.")


def verdict_memorisation(t1: dict) -> str:
    """What the outputs are: distance to the training set, distinct nearest images, copies."""
    bits = []
    for r in t1["rows"]:
        m = r["memorisation"]
        bits.append("%s: median NN distance %.2fx the training set's own, %d distinct nearest training images in %d, %.0f%% copies"
                    % (r["method"], m["ratio_to_train_nn"], m["distinct_nn"], m["n_samples"], 100 * m["frac_copies"]))
    return ("Memorisation (ratio test d1/d2 < 1/3 for copies): " + "; ".join(bits)
            + ". The ideal score is a memorising model, so PC reproduces training images; the FP sampler's outputs are "
              "(noisy, for output='last') neighbourhoods of its M references.")


def artefact_table1(cfg: OperatorSamplerConfig, t1: dict, paper: dict) -> dict:
    """``B.table1``: ours (times, FD_clf, memorisation per method), the paper's Table 1, and verdicts."""
    return {
        "ours": {"profile": cfg.profile, "dataset": cfg.dataset, "pool": cfg.pool, "seed": cfg.seed, "score": "ideal score of the pool",
                 "n_groups": cfg.n_groups, "n_per_group": cfg.n_per_group, "pc_images": cfg.pc_images,
                 "rows": _json_rows(t1["rows"]), "fd_floor": t1.get("fd_floor"), "IS": t1["IS"]},
        "paper": paper["table1"],
        "verdict": {"speed": verdict_speed(t1, paper), "fid_cost": verdict_quality(t1), "memorisation": verdict_memorisation(t1)},
        "paper_summary": "FP 0.29-0.30 s/image vs PC1000 36-76 s; FID 42-44 vs 2.2-2.4",
        "ours_summary": "; ".join("%s: %.3g s (1 img)" % (r["method"], r["time_1"]) + (", %s %.3g" % (r["fd"]["metric"], _fd(r)) if _fd(r) is not None else "")
                                  for r in t1["rows"] if r["sde"] == "ve"),
    }


def _trend(xs, ys) -> str:
    ys = [y for y in ys if y is not None]
    if len(ys) < 2:
        return "n/a"
    d = np.diff(ys)
    return "increasing" if np.all(d > 0) else ("decreasing" if np.all(d < 0) else "not monotonic")


def artefact_table2(cfg: OperatorSamplerConfig, t2: dict, paper: dict) -> dict:
    """``B.table2``: FD_clf, diversity and times against M, the paper's Table 2, verdict on the effect of M."""
    rows = t2["rows"]
    Ms = [r["M"] for r in rows]
    fds = [_fd(r) for r in rows]
    t100 = [r["time_100_no_setup"] for r in rows]
    slope = float(np.polyfit(np.log(Ms), np.log(t100), 1)[0]) if len(Ms) >= 2 else float("nan")
    fd_text = ", ".join("%d: %.3g" % (m, f) for m, f in zip(Ms, fds) if f is not None)
    neff_text = ", ".join("%.2g" % r["n_eff_prior"] for r in rows)
    wfrac_text = ", ".join("%.2g" % r["n_eff_weights_over_M"] for r in rows)
    nn_text = ", ".join(str(r["distinct_nn"]) for r in rows)
    name = _mname(rows)
    verdict = (f"Effect of M: {name} is {_trend(Ms, fds)} in M ({fd_text}); the paper's FID rises monotonically (24.6 to 66.0 for "
               f"M = 500 to 5000). Sampling time for 100 images grows as M^{slope:.2f} (paper: roughly linear, 4.2 to 40.2 s). "
               f"Mechanisms (spec E4 (i)): effective number of prior draws {neff_text} (one VE prior draw dominates the projection "
               f"at every M), effective weights / M {wfrac_text}, distinct nearest training images {nn_text} of {rows[0]['n_samples']} samples.")
    return {"ours": {"profile": cfg.profile, "dataset": cfg.dataset, "seed": cfg.seed, "preset": "paper", "sde": "ve",
                     "groups": cfg.sweep_groups, "per_group": cfg.sweep_per_group, "rows": _json_rows(rows), "time_exponent": slope},
            "paper": paper["table2"], "verdict": {"effect_of_M": verdict},
            "paper_summary": "FID 24.6 -> 66.0 as M = 500 -> 5000; 100-image time ~linear in M",
            "ours_summary": f"{name} {_trend(Ms, fds)} in M; time ~ M^{slope:.2f}"}


def artefact_table3(cfg: OperatorSamplerConfig, t3: dict, paper: dict) -> dict:
    """``B.table3``: FD_clf, displacement and weight correlation against L, the paper's Table 3, verdict on robustness to L."""
    rows = t3["rows"]
    fds = [_fd(r) for r in rows if _fd(r) is not None]
    spread = (max(fds) - min(fds)) / np.mean(fds) if fds else float("nan")
    Ls = ", ".join(str(r["L"]) for r in rows)
    disp = ", ".join("%.2g" % r["displacement_vs_L5_over_train_nn"] for r in rows)
    corr = ", ".join("%.2f" % r["weight_corr_with_L1"] for r in rows)
    lam = ", ".join("%.2g" % r["lam_spread_tau"] for r in rows)
    name = _mname(rows)
    verdict = (f"Robustness to L: {name} varies by {100 * spread:.0f}% of its mean across L = {Ls} (paper: all within 2.4 FID, "
               f"about 5%). With common random numbers samples move on average {disp} training-NN distances from their "
               f"L = {t3['ref_L']} counterparts; the weights correlate {corr} with the L = 1 weights, and the eigenvalue spread "
               f"|lam_L - lam_1| T is {lam}. Hypothesis (ii) of spec E4 (weights dominated by u_1) holds where the correlation stays near 1.")
    return {"ours": {"profile": cfg.profile, "dataset": cfg.dataset, "seed": cfg.seed, "preset": "paper", "sde": "ve", "M": t3["M"],
                     "groups": cfg.sweep_groups, "per_group": cfg.sweep_per_group, "rows": _json_rows(rows)},
            "paper": paper["table3"], "verdict": {"robustness_to_L": verdict},
            "paper_summary": "FID 42.0-44.4 for L = 1..100; time ~constant",
            "ours_summary": f"{name} spread {100 * spread:.0f}% across L"}


def verdict_targets(e2: dict) -> str:
    """What the sampler targets (spec 0.4), from the 2-D mode frequencies."""
    rows = [r for r in e2["rows"] if r["case"] == "main"]
    p = e2["predictions"]
    target = p["p_t*^2 * N(0, zeta_s^2) (eta = 1 target)"]
    w = np.array(e2["weights"])

    def l1(a, b):
        return float(np.abs(np.asarray(a) - np.asarray(b)).sum())

    eta1 = [r for r in rows if "eta=1," in r["sampler"] and "uniform" not in r["sampler"]]
    eta02 = [r for r in rows if "eta=0.2" in r["sampler"]]
    pc = next(r for r in rows if r["sampler"].startswith("PC"))
    def fmt(f):
        return "(" + ", ".join("%.2f" % x for x in f) + ")"

    eta1_f = ", ".join(fmt(r["freq"]) for r in eta1)
    eta1_t = ", ".join("%.2f" % l1(r["freq"], target) for r in eta1)
    eta1_w = ", ".join("%.2f" % l1(r["freq"], w) for r in eta1)
    eta02_f = ", ".join(fmt(r["freq"]) for r in eta02)
    return (f"What it samples: at eta = 1 the FP mode frequencies {eta1_f} are at L1 {eta1_t} from the p_t*^2-based target "
            f"{fmt(target)} and {eta1_w} from the data weights {fmt(w)}; PC gives {fmt(pc['freq'])} (L1 {l1(pc['freq'], w):.2f} to w). "
            f"At eta = 0.2 the chain targets p0^25: {eta02_f}, set by the basins of the initialisations. The method is mode-seeking "
            f"by construction (top FP eigen-density ~ p_t*^2, Langevin with noise eta targets p0^(1/eta^2)).")


def artefact_e2(cfg: OperatorSamplerConfig, e2: dict, spectra: dict | None, paper: dict) -> dict:
    """``B.E2``: 2-D mixture, mode frequencies, predictions, PC; verdict on what the sampler targets."""
    return {"ours": {"profile": cfg.profile, "seed": cfg.seed, "chains": e2["chains"], "J": e2["J"], "sigma_star": e2["sigma_star"],
                     "M": cfg.mix_M, "zeta": cfg.mix_zeta, "rows": _json_rows(e2["rows"]),
                     "predictions": {k: np.asarray(v).tolist() for k, v in e2["predictions"].items()},
                     "spectra": _json_rows(spectra["rows"]) if spectra else None},
            "paper": {"mode_collapse": paper["claims"]["mode_collapse"], "what_it_samples": paper["claims"]["what_it_samples"]},
            "verdict": {"what_it_targets": verdict_targets(e2)},
            "paper_summary": "p0 approximates the data distribution; limited diversity, mode collapse from N(0, I)",
            "ours_summary": "FP at eta=1 follows p_t*^2, at eta=0.2 the init basins; PC follows w"}


def artefact_e1(cfg: OperatorSamplerConfig, e1: dict) -> dict:
    """``B.E1``: OU density propagation with every coefficient rule (spec T4)."""
    best = [r for r in e1["rows"] if r["L"] >= 5]
    bio = max(r["biorthogonal, e^{+lam tau}"] for r in best)
    pap = min(min(r["paper (14), e^{-lam tau}"], r["paper (14), e^{+lam tau}"]) for r in best)
    lit = min(r["literal index (Koopman vectors)"] for r in best)
    return {"ours": {"profile": cfg.profile, "seed": cfg.seed, "M": e1["M"], "n_prior": e1["n_prior"], "rows": e1["rows"],
                     "lam": np.asarray(e1["lam"]).tolist()},
            "paper": {"theorem1": "p_t = sum_l c_l(T) e^{lam_l (t - T)} phi_l with c_l = <p_T, phi_l>_H (Paper B, Theorem 1, eqs. (12)-(15))"},
            "verdict": {"coefficients": f"Density propagation (L >= 5): the biorthogonal rule reaches L1 <= {bio:.3f} to the exact density; "
                                        f"the paper's RKHS projection (14) stays at L1 >= {pap:.2f} with either sign of the exponent, and the "
                                        f"literal index reading at >= {lit:.2f}: Theorem 1's projection is not an expansion coefficient for "
                                        f"non-orthogonal eigenfunctions."},
            "paper_summary": "Theorem 1: density from RKHS projections", "ours_summary": f"biorthogonal L1 {bio:.3f}; paper rule {pap:.2f}"}


def artefact_fig2(cfg: OperatorSamplerConfig, f2: dict, paper: dict) -> dict:
    """``B.fig2``: structured initialisations; how far outputs stay from their init against the nearest reference."""
    summary = {p: {"d_init_median": float(np.median(r["d_init"])), "d_ref_median": float(np.median(r["d_ref"])),
                   "closer_to_init": int(np.sum(r["d_init"] < r["d_ref"]))} for p, r in f2["runs"].items()}
    text = "; ".join("%s preset: median distance to the init %.3g, to the nearest reference %.3g (%d of %d outputs closer to their init)"
                     % (p, s["d_init_median"], s["d_ref_median"], s["closer_to_init"], len(f2["kinds"])) for p, s in summary.items())
    return {"ours": {"profile": cfg.profile, "seed": cfg.seed, "M": f2["M"], "images": len(f2["kinds"]), "init_kinds": f2["kinds"],
                     "per_preset": summary, "d_init": {p: r["d_init"].tolist() for p, r in f2["runs"].items()},
                     "d_ref": {p: r["d_ref"].tolist() for p, r in f2["runs"].items()}},
            "paper": paper["figures"]["fig2"] | {"claim": paper["claims"]["init_control"]},
            "verdict": {"init_control": "Initialisation-driven generation: " + text + ". An output near its reference rather than its init "
                                        "means the structure was overridden; with eta = 0.2 the chain stays in the basin the init falls in."},
            "paper_summary": "influence of the init variable and unpredictable", "ours_summary": text[:150]}


def artefact_fig1(cfg: OperatorSamplerConfig, t1: dict, extra: dict, paper: dict) -> dict:
    """``B.fig1``: sample grids (digits; MNIST / CIFAR-10 where present), with memorisation numbers."""
    mem = {r["method"]: r["memorisation"] for r in t1["rows"]}
    ex = {name: ({k: v["memorisation"] for k, v in d["runs"].items()} if d.get("available") else "data set absent")
          for name, d in extra.items()}
    return {"ours": {"profile": cfg.profile, "seed": cfg.seed, "dataset": cfg.dataset, "grid_images": 100, "memorisation": mem, "extra": ex},
            "paper": paper["figures"]["fig1"],
            "verdict": {"samples": "Grids of FP samples (paper and recommended presets) beside PC with the same ideal score. "
                                   + verdict_memorisation(t1)},
            "paper_summary": "10x10 CIFAR-10 grids, VE and VP", "ours_summary": "digits grids" + (", " + ", ".join(k for k, v in extra.items() if v.get("available")) if any(v.get("available") for v in extra.values()) else "")}


def artefact_e3(cfg: OperatorSamplerConfig, t1: dict, extra: dict) -> dict:
    """``B.E3``: images with the ideal score: memorisation, diversity, operator diagnostics, extra data sets."""
    fp_rows = [r for r in t1["rows"] if r["preset"] != "baseline"]
    ops = {r["method"]: r.get("operator") for r in fp_rows}
    ex = {}
    for name, d in extra.items():
        if not d.get("available"):
            ex[name] = "absent from $KL_REPRO_DATA"
            continue
        ex[name] = {k: {"memorisation": v["memorisation"], "operator": v["operator"], "t_setup": v["t_setup"], "t_sampling": v["t_sampling"],
                        "fallback_steps": v["fallback_steps"]} for k, v in d["runs"].items()}
    neff = ", ".join("%s %.3g" % (m, o["n_eff_prior"]) for m, o in ops.items() if o and "n_eff_prior" in o)
    return {"ours": {"profile": cfg.profile, "dataset": cfg.dataset, "seed": cfg.seed, "operator": ops, "extra": ex},
            "paper": {"hyperparameters": "zeta = 22, zeta_s = 5, M = 2000, L = 5, eps = 0.5, J = 1000, eta = 0.2 (Paper B, Sec. 4.1)"},
            "verdict": {"memorisation": verdict_memorisation(t1),
                        "projection": "Effective number of prior draws in the projection (13)-(14), of M: %s. Spec 3.7 measured "
                                      "1 of 2000 for VE on CIFAR-10 (one draw dominates) and about 1986 for VP." % neff},
            "paper_summary": "FID 42-44 (Inception)", "ours_summary": "memorisation and operator diagnostics"}


def artefact_e4(cfg: OperatorSamplerConfig, ab: dict) -> dict:
    """``B.E4``: ablations of the open choices, one group each."""
    rows = ab["rows"]
    base = rows[0]
    fb = [r for r in rows if r["fallback_frac"] > 0]
    same = [r["variant"] for r in rows[1:]
            if abs(r["mean_pairwise"] - base["mean_pairwise"]) <= 1e-3 * base["mean_pairwise"] and abs(r["distinct_nn"] - base["distinct_nn"]) <= 1]
    return {"ours": {"profile": cfg.profile, "dataset": cfg.dataset, "seed": cfg.seed, "images": cfg.ablation_images, "rows": _json_rows(rows)},
            "paper": {"note": "The paper fixes zeta_s = 5, eta = 0.2, solid-colour inits and reports NaN problems (Sec. 4.1); the other options are the spec's"},
            "verdict": {"ablations": "Against the paper preset (%d distinct nearest training images of %d, mean pairwise distance %.3g): "
                                     % (base["distinct_nn"], cfg.ablation_images, base["mean_pairwise"])
                                     + "; ".join("%s: %d distinct, pairwise %.3g%s" % (r["variant"], r["distinct_nn"], r["mean_pairwise"],
                                                 (", %s %.3g" % (r["fd"]["metric"], _fd(r))) if _fd(r) is not None else "") for r in rows[1:])
                                     + (". Indistinguishable from the paper preset (mean pairwise distance within 0.1%%): %s (at t* = epsilon the ideal score vanishes at the references, "
                                        "so b = 0, K is the symmetric diffusion part and the Koopman/FP readings, the drift's sign and "
                                        "e^{+-lam T} barely differ)" % ", ".join(same) if same else ". No variant reproduced the paper preset's samples")
                                     + ". Fallback (p0 <= 0) steps occurred in %d of %d variants; %d samples were non-finite."
                                     % (len(fb), len(rows), sum(r["nonfinite_samples"] for r in rows))},
            "paper_summary": "not in the paper", "ours_summary": f"{len(rows)} variants"}


def _p2_sentence(rows: list[dict]) -> str:
    unique = [r for r in rows if r["cluster_size"] == 1]
    p2 = [r for r in unique if r["l1_to_p2"] < r["l1_to_p"]]
    clustered = [r for r in rows if r["cluster_size"] > 1]
    text = (f"Where the top eigenvalue is isolated ({len(unique)} cases) the eigen-density is closer to p_t*^2 than to p_t* in "
            f"{len(p2)} of them")
    if clustered:
        text += ("; at %s a cluster of %s near-zero eigenvalues (one per separated mode) makes the top eigenvector non-unique"
                 % (", ".join("sigma* = %g" % r["sigma_star"] if r["sigma_star"] else "t* = %g" % r["t_star"] for r in clustered),
                    "/".join(str(r["cluster_size"]) for r in clustered)))
    return text + "."


def artefacts_spectra(cfg: EigenSpectraConfig, bm: dict, ou: dict, mix: dict, img: dict) -> dict[str, dict]:
    """Data and verdicts of the eigen-spectra chapter: ``B.spectra_side_by_side``, ``B.spectra_ou``, ``B.spectra_mixture``, ``B.spectra_images``."""
    common = {"profile": cfg.profile, "seed": cfg.seed}
    ou_err = np.abs(ou["lam_truncated"][:4] - ou["lam_exact"][:4])
    side = ("Paper A's covariance operator min(s, t) is self-adjoint, positive and compact: eigenvalues ((k - 1/2) pi)^-2 fall like "
            "k^-2 (Nystrom with %d points: max relative error %.1e over k <= %d) with gap ratio lambda_1 / lambda_2 = %.0f. Paper B's "
            "Fokker-Planck operator is a generator: eigenvalues <= 0 and unbounded below, linear in n for OU (lambda_n = -n, "
            "recovered to %.3f, %.3f, %.3f, %.3f; spectral gap 1), found only after truncating G0's numerical null space "
            "(plain Tikhonov: %d spurious near-zero eigenvalues among the top %d)."
            % (cfg.n_grid, float(np.max(bm["rel_err"])), cfg.n_eig, bm["gap_ratio"], *ou_err, ou["spurious_tikhonov"], len(ou["lam_tikhonov"])))
    mix_rows = mix["rows"]
    mix_text = "; ".join(
        ("VE sigma* = %g: cluster %d, L1(rho_0, p^2 * k) = %.3f vs L1(rho_0, p * k) = %.3f" % (r["sigma_star"], r["cluster_size"], r["l1_to_p2"], r["l1_to_p"]))
        if r["sde"] == "ve" else ("VP t* = %g: L1 to p^2 e^{|x|^2/2} * k = %.3f vs to p * k = %.3f" % (r["t_star"], r["l1_to_p2"], r["l1_to_p"]))
        for r in mix_rows)
    if img.get("available"):
        img_text = "; ".join("t* = %.3g: top-5 spread %.2g of the Laplacian shift %.3g, %d positive eigenvalues, rank %d, cluster %d"
                             % (r["t_star"], r["top5_spread_over_shift"], r["laplacian_shift"], r["positive_eigenvalues"], r["r"], r["cluster_size"])
                             for r in img["rows"])
        first = img["rows"][0]
        shift_text = ("At t* = %.3g the top eigenvalues sit within %.0f%% of the uniform Laplacian shift -a d / (2 zeta^2) = %.3g and "
                      "|lam| T << 1, so every e^{lam T} is about 1 and the weights barely depend on L"
                      % (first["t_star"], 100 * first["top5_spread_over_shift"], first["laplacian_shift"])
                      if first["top5_spread_over_shift"] < 0.2 and abs(first["laplacian_shift"]) < 0.1 else
                      "At t* = %.3g the top-5 spread is %.2g of the Laplacian shift: the drift shapes the spectrum"
                      % (first["t_star"], first["top5_spread_over_shift"]))
        pos = [r for r in img["rows"] if r["positive_eigenvalues"] > 0]
        pos_text = ("; at t* = %s the kernel Galerkin approximation gives eigenvalues > 0, which the true generator cannot have"
                    % ", ".join("%.3g" % r["t_star"] for r in pos)) if pos else "; no eigenvalue is positive"
        img_verdict = f"{img['dataset']} (d = {img['d']}, M = {img['M']}, ideal score): " + img_text + ". " + shift_text + pos_text + "."
        img_rows = [{k: (np.asarray(v).astype(complex).astype(str).tolist() if k == "lam" else v) for k, v in r.items()} for r in img["rows"]]
    else:
        img_verdict, img_rows = f"{img['dataset']} is not available in this environment.", []
    return {
        "B.spectra_side_by_side": {"ours": {**common, "brownian_lam": bm["lam_numerical"].tolist(), "brownian_rel_err": bm["rel_err"].tolist(),
                                            "ou_lam": ou["lam_truncated"].tolist(), "ou_M": ou["M"]},
                                   "paper": {"A": "Paper A, eq. (8): lambda_k = ((k - 1/2) pi)^-2", "B": "Paper B, eqs. (6)-(9): kernel gEDMD of the FP operator"},
                                   "verdict": {"spectra": side}, "paper_summary": "covariance vs generator spectra",
                                   "ours_summary": "BM k^-2 decay, gap 9; OU -n, gap 1"},
        "B.spectra_ou": {"ours": {**common, "M": ou["M"], "r": ou["r"], "lam_truncated": ou["lam_truncated"].tolist(),
                                  "lam_tikhonov": ou["lam_tikhonov"].tolist(), "density_rel_l1": ou["density_rel_l1"]},
                         "paper": {"note": "OU is not in paper B; the ground truth of spec T1-T3"},
                         "verdict": {"spurious": "Truncated basis (rank %d of %d): %d spurious eigenvalues in the top %d; Tikhonov alone: %d. "
                                                 "FP eigen-densities match the smoothed Hermite functions to relative L1 %s."
                                                 % (ou["r"], ou["M"], ou["spurious_truncated"], len(ou["lam_truncated"]), ou["spurious_tikhonov"],
                                                    ", ".join("%.3f" % e for e in ou["density_rel_l1"]))},
                         "paper_summary": "n/a", "ours_summary": "OU spectrum recovered with truncation"},
        "B.spectra_mixture": {"ours": {**common, "M": mix["M"], "zeta": mix["zeta"], "rows": _json_rows(mix_rows)},
                              "paper": {"note": "the paper reads the top eigenfunction as the data density p_0 (eq. (15))"},
                              "verdict": {"stationary_density": "Top FP eigen-density of the frozen reverse SDE: " + mix_text + ". "
                                                                + _p2_sentence(mix_rows)},
                              "paper_summary": "p0 from the dominant eigenfunctions", "ours_summary": "top eigen-density ~ p^2"},
        "B.spectra_images": {"ours": {**common, "dataset": img["dataset"], "available": img.get("available", False), "rows": img_rows},
                             "paper": {"note": "paper B freezes no time explicitly; t* is the spec's choice"},
                             "verdict": {"images": img_verdict}, "paper_summary": "n/a", "ours_summary": "near-uniform shift at t* = eps"},
    }
