"""Display tables of paper B's results (pandas), as the chapters show them beside their figures.

Each function takes one experiment's result and returns a DataFrame (or its Styler); the stored
artefacts hold the same numbers as JSON (:mod:`kl_repro.paper_b.report`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kl_repro.paper_b.image_runs import boot_interval
from kl_repro.paper_b.verdicts import deep_speedups

__all__ = ["ou_table", "mixture_table", "image_spectra_table", "e1_table", "e2_tables", "table1_frame", "rows_with_fd",
           "score_models_table"]


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


def _ours_rows(t1: dict, group: str) -> list[dict]:
    out = []
    for r in t1["rows"]:
        fd = r.get("fd") or {}
        lo, hi = boot_interval(fd["boot"]) if fd.get("boot") is not None else (None, None)
        out.append({"group": group, "method": r["method"], "time_1": r.get("time_1"), "time_1_no_setup": r.get("time_1_no_setup"),
                    "time_100": r.get("time_100"), "time_100_no_setup": r.get("time_100_no_setup"), "speedup_1": r.get("speedup_1"),
                    "speedup_100": r.get("speedup_100"), "nfe": r.get("nfe"), "quality": fd.get("metric"), "value": fd.get("value"),
                    "95% interval": None if lo is None else f"[{lo:.3g}, {hi:.3g}]", "KD": fd.get("kid_mean"),
                    "IS": "n/a (offline)", "n": r["n_samples"]})
    return out


# Table 1's columns: the keys of the result rows, and the headers a reader sees.
TABLE1_COLUMNS = {
    "group": "group", "method": "method",
    "time_1": "s, 1 image (with set-up)", "time_1_no_setup": "s, 1 image (sampling only)",
    "time_100": "s, 100 images (with set-up)", "time_100_no_setup": "s, 100 images (sampling only)",
    "speedup_1": "PC / FP time, 1 image", "speedup_100": "PC / FP time, 100 images", "nfe": "network evaluations",
    "quality": "quality metric", "value": "quality", "95% interval": "95% interval", "KD": "kernel distance",
    "IS": "IS", "n": "samples"}


def table1_frame(t1: dict, ideal: dict | None, deep_rows: list[dict] | None, paper: dict, dataset: str):
    """Table 1 in groups of rows: the paper's numbers, ours with the trained network, the deep-network timing, the ideal score.

    Times in seconds (the paper's on an RTX 3090Ti, ours on this CPU), quality with its metric's name (the
    paper's FID; ours FD_clf or FID with a 95 % bootstrap interval over the samples).
    """
    src = paper["table1"].get("source", "Paper B, Table 1")
    rows = [{"group": f"paper ({src})", "method": k, "time_1": p.get("time_1_image_s"), "time_100": p.get("time_100_images_s"),
             "quality": "FID", "value": p.get("FID"), "IS": p.get("IS"), "n": 50_000}
            for k, p in paper["table1"].items() if isinstance(p, dict)]
    rows += _ours_rows(t1, f"ours, {t1['score']} on {dataset}")
    ratios = {(d["network"], d["pc"]): d for d in deep_speedups(deep_rows)}
    for r in deep_rows or []:
        pc = ratios.get((r["network"], r["sampler"]), {})
        rows.append({"group": "ours, NCSN++ / DDPM++ deep timing (random weights, this machine)",
                     "method": f"{r['network']}, {r['sampler']}", "nfe": r.get("nfe"),
                     "time_1": r["s_per_image_1_with_setup"], "time_1_no_setup": r["s_per_image_1"],
                     "time_100": 100 * r["s_per_image_100_with_setup"], "time_100_no_setup": 100 * r["s_per_image_100"],
                     "speedup_1": pc.get("speedup_1"), "speedup_100": pc.get("speedup_100"),
                     "quality": "not measured (random weights)"})
    if ideal is not None:
        rows += _ours_rows(ideal, f"reference: {ideal['score']} ({dataset}, exact score)")
    return pd.DataFrame(rows).reindex(columns=list(TABLE1_COLUMNS)).rename(columns=TABLE1_COLUMNS)


def rows_with_fd(rows: list[dict]):
    """Result rows with their Frechet distance (and its 95 % bootstrap interval) as columns named after the metric."""
    fd_name = next((r["fd"]["metric"] for r in rows if r.get("fd")), "FD")
    out = []
    for r in rows:
        fd = r.get("fd") or {}
        ival = boot_interval(fd["boot"]) if fd.get("boot") is not None else None
        out.append({**{k: x for k, x in r.items() if k not in ("fd", "diversity_boot", "t_sampling_groups")},
                    fd_name: fd.get("value"), "95% interval": None if ival is None else "[%.3g, %.3g]" % ival})
    return pd.DataFrame(out).style.format(precision=3, na_rep="-")


def score_models_table(networks: dict) -> pd.DataFrame:
    """One row per trained score network: SDE, architecture, parameters, steps, training seconds, final loss, reused."""
    return pd.DataFrame([{"sde": k.upper(), "network": n["label"], "parameters": n["parameters"], "steps": n["steps"],
                          "batch": n["config"]["batch"], "lr": n["config"]["lr"], "training s": n["seconds"],
                          "final DSM loss": n["final_loss"], "loaded from the results folder": n["reused"]}
                         for k, n in networks.items()])
