"""Verdict sentences of paper B's low-dimensional checks and spectra (E1, E2, E3, E4, Fig. 2, OU, mixture, images).

Every sentence starts with a word of :mod:`kl_repro.core.verdict`; where the evidence is a sample, the word
comes from :func:`~kl_repro.core.verdict.judge_interval` of a bootstrap interval that the sentence prints.
The image tables' verdicts (Tables 1-3) are in :mod:`kl_repro.paper_b.verdicts`.
"""

from __future__ import annotations

import numpy as np

from kl_repro.core.verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, PARTLY, judge_interval, not_tested
from kl_repro.paper_b.image_runs import LEVEL, boot_interval

__all__ = ["fd_value", "interval_text", "check_word", "verdict_targets", "verdict_coefficients", "verdict_init_control",
           "verdict_projection", "verdict_ablations", "verdict_mode_collapse", "verdict_ou", "verdict_mixture",
           "verdict_images"]


def fd_value(row) -> float | None:
    """The Frechet distance of a result row, or None when it was not computed."""
    return None if not row.get("fd") else float(row["fd"]["value"])


def interval_text(est: float, lo: float, hi: float, fmt: str = ".3g", what: str = "samples, FP groups as clusters") -> str:
    """``"12.3 [10.1, 14.5] (95 % bootstrap interval over samples, FP groups as clusters)"``."""
    return f"{est:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] ({100 * LEVEL:.0f} % bootstrap interval over {what})"


def check_word(ok: bool) -> str:
    """The word of an exact check (no samples): "Holds" when it passes, else "Does not hold at this scale"."""
    return HOLDS if ok else DOES_NOT_HOLD


def _freqs(f) -> str:
    return "(" + ", ".join("%.2f" % x for x in f) + ")"


def _l1(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def _multinomial_boot(freq, n: int, w, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """L1 distance to ``w`` of ``n_boot`` multinomial resamples of ``n`` draws with frequencies ``freq``."""
    draws = np.random.default_rng(seed).multinomial(n, np.asarray(freq) / np.sum(freq), size=n_boot) / n
    return np.abs(draws - np.asarray(w)[None]).sum(1)


def verdict_targets(e2: dict) -> str:
    """Claim "p0 approximates the data distribution" (Sec. 3.2) on the 2-D mixture: FP's mode frequencies against PC's.

    Effect: ``L1(FP eta=1, w) - L1(PC, w)`` (``w``: the data weights), bootstrap over the chains; the claim
    holds if FP is no farther from the data than PC beyond the noise.
    """
    rows = [r for r in e2["rows"] if r["case"] == "main"]
    target = e2["predictions"]["p_t*^2 * N(0, zeta_s^2) (eta = 1 target)"]
    w = np.array(e2["weights"])
    eta1 = [r for r in rows if "eta=1," in r["sampler"] and "uniform" not in r["sampler"]]
    eta02 = [r for r in rows if "eta=0.2" in r["sampler"]]
    pc = next(r for r in rows if r["sampler"].startswith("PC"))
    fp, n = eta1[0], int(e2["chains"])
    boot = _multinomial_boot(fp["freq"], n, w) - _multinomial_boot(pc["freq"], n, w, seed=1)
    lo, hi = boot_interval(boot)
    word = judge_interval(lo, hi, null=0.0, larger_is_better=False)
    if word == HOLDS or word == INCONCLUSIVE and hi < 0.05:  # no farther than PC, to within the noise
        word = HOLDS
    est = _l1(fp["freq"], w) - _l1(pc["freq"], w)
    return (f"{word} (2-D mixture, exact VE score, {n} chains): L1 to the data weights {_freqs(w)} of FP ({fp['sampler']}) minus that "
            f"of PC = {interval_text(est, lo, hi, '.2f', 'chains')}. FP at eta = 1 gives {', '.join(_freqs(r['freq']) for r in eta1)}, "
            f"at L1 {', '.join('%.2f' % _l1(r['freq'], target) for r in eta1)} from the p_t*^2-based target {_freqs(target)}; PC gives "
            f"{_freqs(pc['freq'])}. At eta = 0.2 the chain targets p0^25: {', '.join(_freqs(r['freq']) for r in eta02)}, set by the "
            "basins of the initialisations (top FP eigen-density ~ p_t*^2, Langevin with noise eta targets p0^(1/eta^2)).")


def verdict_coefficients(e1: dict) -> tuple[str, float, float]:
    """``(sentence, worst biorthogonal L1, best paper-rule L1)`` of E1 (Theorem 1) at ``L >= 5``; an exact check, no samples."""
    best = [r for r in e1["rows"] if r["L"] >= 5]
    bio = max(r["biorthogonal, e^{+lam tau}"] for r in best)
    pap = min(min(r["paper (14), e^{-lam tau}"], r["paper (14), e^{+lam tau}"]) for r in best)
    lit = min(r["literal index (Koopman vectors)"] for r in best)
    word = DOES_NOT_HOLD if pap > max(3 * bio, 0.05) else (HOLDS if pap <= max(1.5 * bio, 0.05) else PARTLY)
    sentence = (f"{word} (OU, L >= 5, deterministic quadrature): the paper's RKHS projection (14) reaches L1 >= {pap:.2f} to the exact "
                f"density with either sign of the exponent, and the literal index reading >= {lit:.2f}, while the biorthogonal rule "
                f"reaches L1 <= {bio:.3f}: Theorem 1's projection is not an expansion coefficient for non-orthogonal eigenfunctions.")
    return sentence, bio, pap


def verdict_init_control(summary: dict, n_images: int) -> tuple[str, str]:
    """``(sentence, per-preset text)`` of Fig. 2 on the claim "the init's influence is variable" (Sec. 4.3).

    Holds when, in the paper preset, some outputs stay closer to their init than to the nearest reference
    and some do not; does not hold when all (or none) do.
    """
    text = "; ".join("%s preset: median distance to the init %.3g, to the nearest reference %.3g (%d of %d outputs closer to their init)"
                     % (p, s["d_init_median"], s["d_ref_median"], s["closer_to_init"], n_images) for p, s in summary.items())
    k = summary["paper"]["closer_to_init"] if "paper" in summary else next(iter(summary.values()))["closer_to_init"]
    word = HOLDS if 0 < k < n_images else DOES_NOT_HOLD
    return (f"{word} ({n_images} structured initialisations, paper preset: {k} of {n_images} outputs keep their init): " + text
            + ". An output near its reference rather than its init means the structure was overridden; with eta = 0.2 the chain "
              "stays in the basin the init falls in."), text


def verdict_projection(operators: dict) -> str:
    """E3, our candidate mechanism (i) for Table 2 (not a claim of the paper): one VE prior draw dominates the projection (13)-(14)."""
    ops = {m: o for m, o in operators.items() if o and "n_eff_prior" in o}
    if not ops:
        return not_tested("no FP run of this profile reported its prior projection")
    ve = [o["n_eff_prior"] for m, o in ops.items() if "VE" in m]
    word = (HOLDS if max(ve) < 2 else DOES_NOT_HOLD) if ve else INCONCLUSIVE
    neff = ", ".join("%s %.3g" % (m, o["n_eff_prior"]) for m, o in ops.items())
    return (f"{word} (candidate mechanism (i), ours): effective number of prior draws in the projection (13)-(14), of M: {neff}. "
            "On CIFAR-10 with M = 2000 one VE prior draw dominates (about 1 of 2000) while VP uses about 1986 (Methods B.3).")


def verdict_mode_collapse(rows: list[dict], n_images: int) -> str:
    """Claim "N(0, I) initialisations often collapse; solid colours mitigate it" (Sec. 4.1) from E4's diversity intervals."""
    base = rows[0]
    gauss = next((r for r in rows if r["variant"].startswith("init = gaussian")), None)
    if gauss is None or "diversity_boot" not in gauss:
        return not_tested("E4 ran no Gaussian-initialisation variant with a diversity bootstrap")
    lo, hi = boot_interval(gauss["diversity_boot"], base["diversity_boot"])
    word = judge_interval(lo, hi, null=0.0, larger_is_better=False)  # claim: Gaussian inits give less diverse samples
    est = gauss["mean_pairwise"] - base["mean_pairwise"]
    return (f"{word} (VE, one group of {n_images}, {base.get('score', 'ideal score of the pool')}): mean pairwise distance with "
            f"N(0, I) initialisations minus that with solid-colour ones = {interval_text(est, lo, hi)}; distinct nearest training "
            f"images {gauss['distinct_nn']} against {base['distinct_nn']} of {n_images}.")


def verdict_ablations(rows: list[dict], n_images: int) -> str:
    """E4: each variant against the paper preset (first row); the paper fixes these choices and claims nothing about them."""
    base = rows[0]
    fb = [r for r in rows if r["fallback_frac"] > 0]
    same = [r["variant"] for r in rows[1:]
            if abs(r["mean_pairwise"] - base["mean_pairwise"]) <= 1e-3 * base["mean_pairwise"] and abs(r["distinct_nn"] - base["distinct_nn"]) <= 1]
    each = "; ".join("%s: %d distinct, pairwise %.3g%s" % (r["variant"], r["distinct_nn"], r["mean_pairwise"],
                     (", %s %.3g" % (r["fd"]["metric"], fd_value(r))) if fd_value(r) is not None else "") for r in rows[1:])
    same_text = (". Indistinguishable from the paper preset (mean pairwise distance within 0.1%%): %s (at t* = sampling_eps the ideal "
                 "score vanishes at the references, so b = 0, K is the symmetric diffusion part and the Koopman/FP readings, the "
                 "drift's sign and e^{+-lam tau} barely differ)" % ", ".join(same)) if same else ". No variant reproduced the paper preset's samples"
    return (not_tested("paper B fixes these choices and claims nothing about the alternatives").rstrip(".")
            + "; against the paper preset (%d distinct nearest training images of %d, mean pairwise distance %.3g): "
            % (base["distinct_nn"], n_images, base["mean_pairwise"]) + each + same_text
            + ". Fallback (p0 <= 0) steps occurred in %d of %d variants; %d samples were non-finite."
            % (len(fb), len(rows), sum(r["nonfinite_samples"] for r in rows)))


def verdict_ou(ou: dict) -> str:
    """Checks T1-T3 (ours, not a claim of paper B): no spurious eigenvalue with the truncated basis, eigen-densities to 5 %."""
    ok = ou["spurious_truncated"] == 0 and max(ou["density_rel_l1"][:2]) < 0.05
    return (f"{HOLDS if ok else DOES_NOT_HOLD} (checks T1-T3, exact OU answers): truncated basis (rank {ou['r']} of {ou['M']}): "
            f"{ou['spurious_truncated']} spurious eigenvalues in the top {len(ou['lam_truncated'])}; Tikhonov alone: "
            f"{ou['spurious_tikhonov']}. FP eigen-densities match the smoothed Hermite functions to relative L1 "
            + ", ".join("%.3f" % e for e in ou["density_rel_l1"]) + ".")


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


def verdict_mixture(mix: dict) -> str:
    """The paper's reading "the top eigenfunction is p0" (eq. (15)) against the frozen reverse SDE of a 2-D mixture (check T5)."""
    unique = [r for r in mix["rows"] if r["cluster_size"] == 1]
    n_p2 = sum(r["l1_to_p2"] < r["l1_to_p"] for r in unique)
    word = INCONCLUSIVE if not unique else (DOES_NOT_HOLD if n_p2 == len(unique) else (PARTLY if n_p2 else HOLDS))
    mix_text = "; ".join(
        ("VE sigma* = %g: cluster %d, L1(rho_0, p^2 * k) = %.3f vs L1(rho_0, p * k) = %.3f" % (r["sigma_star"], r["cluster_size"], r["l1_to_p2"], r["l1_to_p"]))
        if r["sde"] == "ve" else ("VP t* = %g: L1 to p^2 e^{|x|^2/2} * k = %.3f vs to p * k = %.3f" % (r["t_star"], r["l1_to_p2"], r["l1_to_p"]))
        for r in mix["rows"])
    return (f"{word} (2-D mixture, exact scores, deterministic grid): the top FP eigen-density of the frozen reverse SDE is closer to "
            f"p_t*^2 than to p_t* in {n_p2} of {len(unique)} isolated cases: " + mix_text + ". " + _p2_sentence(mix["rows"]))


def _shift_sentence(first: dict) -> str:
    if first["top5_spread_over_shift"] < 0.2 and abs(first["laplacian_shift"]) < 0.1:
        return ("At t* = %.3g the top eigenvalues sit within %.0f%% of the uniform Laplacian shift -a d / (2 zeta^2) = %.3g and "
                "|lam| tau << 1, so every e^{lam tau} is about 1 and the weights barely depend on L"
                % (first["t_star"], 100 * first["top5_spread_over_shift"], first["laplacian_shift"]))
    return ("At t* = %.3g the top-5 spread is %.2g of the Laplacian shift: the drift shapes the spectrum"
            % (first["t_star"], first["top5_spread_over_shift"]))


def verdict_images(img: dict) -> str:
    """The image spectra against ``t*`` (paper B states no spectrum, so nothing of the paper's is tested)."""
    if not img.get("available"):
        return not_tested(f"{img['dataset']} is not available in this environment")
    img_text = "; ".join("t* = %.3g: top-5 spread %.2g of the Laplacian shift %.3g, %d positive eigenvalues, rank %d, cluster %d"
                         % (r["t_star"], r["top5_spread_over_shift"], r["laplacian_shift"], r["positive_eigenvalues"], r["r"], r["cluster_size"])
                         for r in img["rows"])
    pos = [r for r in img["rows"] if r["positive_eigenvalues"] > 0]
    pos_text = ("; at t* = %s the kernel Galerkin approximation gives eigenvalues > 0, which the true generator cannot have"
                % ", ".join("%.3g" % r["t_star"] for r in pos)) if pos else "; no eigenvalue is positive"
    because = "paper B states no spectrum and freezes no time explicitly (t* is our choice)"
    return (not_tested(because).rstrip(".") + f"; what {img['dataset']} shows (d = {img['d']}, M = {img['M']}, ideal score): "
            + img_text + ". " + _shift_sentence(img["rows"][0]) + pos_text + ".")
