"""Display tables of paper B's results (pandas), as the chapters show them beside their figures.

Each function takes one experiment's result and returns a DataFrame (or its Styler); the stored
artefacts hold the same numbers as JSON (:mod:`kl_repro.paper_b.report`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ou_table", "mixture_table", "image_spectra_table", "e1_table", "e2_tables", "table1_frames", "rows_with_fd"]


def ou_table(ou: dict) -> pd.DataFrame:
    """OU eigenvalues: exact, truncated basis, Tikhonov only."""
    return pd.DataFrame({"exact": ou["lam_exact"], "truncated basis": ou["lam_truncated"], "Tikhonov only": ou["lam_tikhonov"]})


def mixture_table(mix: dict) -> pd.DataFrame:
    """One row per frozen time of the 2-D mixture: rank, top eigenvalues over ``a``, cluster, L1 to ``p^2 * k`` and ``p * k``."""
    return pd.DataFrame([{"sde": r["sde"], "sigma*": r["sigma_star"], "t*": r["t_star"], "rank r": r["r"],
                          "lam_0..3 / a": np.round(np.real(r["lam_over_a"][:4]), 4), "cluster": r["cluster_size"],
                          "max|Im|/|Re|": r["max_im_over_re"], "L1(rho_0, p^2*k)": r["l1_to_p2"], "L1(rho_0, p*k)": r["l1_to_p"]}
                         for r in mix["rows"]])


def image_spectra_table(img: dict) -> pd.DataFrame:
    """One row per freeze time of the image spectra (empty when the data set is absent)."""
    return pd.DataFrame([{"t*": r["t_star"], "sigma(t*)": r["sigma_t"], "a = g^2": r["a"], "zeta": r["zeta"], "rank r": r["r"],
                          "cond(G0_r)": r["cond"], "Re lam_0..4": np.round(np.real(r["lam"][:5]), 5),
                          "Laplacian shift": r["laplacian_shift"], "top-5 spread / shift": r["top5_spread_over_shift"],
                          "positive eigenvalues": r["positive_eigenvalues"], "gEDMD s": r["t_gedmd"]} for r in img["rows"]])


def e1_table(e1: dict):
    """E1: L1 distance to the exact density per ``tau``, ``L`` and coefficient rule."""
    return pd.DataFrame(e1["rows"]).style.format(precision=3)


def e2_tables(e2: dict) -> dict:
    """E2: the predicted mode masses and each sampler's mode frequencies."""
    preds = pd.DataFrame([{"prediction": k, "freq (modes 1-3)": np.round(p, 3)} for k, p in e2["predictions"].items()])
    runs = pd.DataFrame([{"case": r["case"], "sampler": r["sampler"], "freq (modes 1-3)": np.round(r["freq"], 3),
                          "fallback share": r["fallback_frac"], "negative weights": r.get("frac_negative_w")} for r in e2["rows"]])
    return {"predicted mode masses": preds, "mode frequencies of the samplers": runs}


def table1_frames(t1: dict, paper: dict) -> dict:
    """Table 1: ours (times, speed-ups, NFE, FD and KD, fallbacks) and the paper's."""
    cols = ["method", "time_1", "time_1_no_setup", "time_100", "time_100_no_setup", "speedup_1", "speedup_100", "nfe"]
    fd_name = next((r["fd"]["metric"] for r in t1["rows"] if r.get("fd")), "FD")
    kd_name = next((r["fd"]["kid_metric"] for r in t1["rows"] if r.get("fd")), "KD")
    ours = pd.DataFrame([{**{c: r.get(c) for c in cols}, fd_name: (r["fd"]["value"] if r.get("fd") else None),
                          kd_name: (r["fd"]["kid_mean"] if r.get("fd") else None), "IS": "n/a (offline)",
                          "fallback steps": r.get("fallback_steps"), "n": r["n_samples"]} for r in t1["rows"]])
    theirs = pd.DataFrame([{"method": k, **dict(p)} for k, p in paper["table1"].items() if isinstance(p, dict)])
    return {"ours (seconds on this machine)": ours.style.format(precision=3, na_rep="-"), "paper (seconds on an RTX 3090Ti)": theirs}


def rows_with_fd(rows: list[dict]):
    """Result rows with their Frechet distance as one column named after the metric (``FD_clf``, ``FID``)."""
    fd_name = next((r["fd"]["metric"] for r in rows if r.get("fd")), "FD")
    return pd.DataFrame([{**{k: x for k, x in r.items() if k != "fd"}, fd_name: (r["fd"]["value"] if r.get("fd") else None)}
                         for r in rows]).style.format(precision=3, na_rep="-")
