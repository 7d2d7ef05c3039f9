"""Paper B's claims, one row each: the claim, its source, our verdict and the artefact that shows it.

The claim-by-claim counterpart of :func:`kl_repro.paper_a.verdicts.claims_summary`, built from the
artefacts chapters 05 and 06 store (``B.*``, :mod:`kl_repro.paper_b.report`).  An artefact that judges
several claims keeps one sentence per claim under ``verdicts``; the row takes its own sentence there and
falls back to the artefact's ``verdict``.  Every sentence starts with a word of :mod:`kl_repro.core.verdict`
(a missing artefact reads "Not tested by this experiment, because ...").
"""

from __future__ import annotations

from kl_repro.core import store
from kl_repro.core.registry import paper_values
from kl_repro.core.verdict import not_tested

__all__ = ["CLAIMS", "THEOREM1", "claims_summary", "verdict_text"]

#: Theorem 1 is not among ``paper_b.toml``'s claims; its text and source, as E1 tests it.
THEOREM1 = {"text": "The density at any time follows from the eigenpairs through the RKHS projections c_l = <p_T, phi_l>_H",
            "source": "Paper B, Theorem 1, eqs. (12)-(15)"}

#: ``(claim key in paper_b.toml, artefact id, keys of the artefact's ``verdicts`` that hold this claim's sentence)``.
CLAIMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("speedup", "B.table1", ("speed", "speedup")),
    ("fid_cost", "B.table1", ("fid_cost", "quality")),
    ("effect_M", "B.table2", ("effect_M",)),
    ("robust_L", "B.table3", ("robust_L",)),
    ("what_it_samples", "B.E2", ("what_it_samples", "targets")),
    ("theorem1", "B.E1", ("theorem1", "coefficients")),
    ("mode_collapse", "B.E4", ("mode_collapse",)),
    ("init_control", "B.fig2", ("init_control",)),
)


def verdict_text(value) -> str:
    """A stored verdict as one plain sentence: a string as is, a dict of sentences joined in order, else ``str``."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(verdict_text(v) for v in value.values() if v)
    if isinstance(value, (list, tuple)):
        return " ".join(verdict_text(v) for v in value if v)
    return " ".join(str(value).split())


def _claim_verdict(art: dict | None, keys: tuple[str, ...]) -> str:
    if art is None:
        return not_tested("the chapter that makes this artefact was not run at this profile")
    per_claim = art.get("verdicts") if isinstance(art.get("verdicts"), dict) else {}
    for k in keys:
        if per_claim.get(k):
            return verdict_text(per_claim[k])
    verdict = art.get("verdict")
    if isinstance(verdict, dict):
        verdict = next((verdict[k] for k in keys if verdict.get(k)), verdict)
    return verdict_text(verdict) or not_tested("the artefact stores no verdict")


def claims_summary(profile: str) -> list[dict]:
    """One row per claim of paper B: ``claim``, ``source``, ``verdict`` (a sentence) and ``shown in`` (the artefact id)."""
    claims = dict(paper_values("B")["claims"], theorem1=THEOREM1)
    rows = []
    for key, art_id, keys in CLAIMS:
        c = claims[key]
        rows.append({"claim": c["text"], "source": c["source"],
                     "verdict": _claim_verdict(store.load_artefact(profile, art_id), keys), "shown in": art_id})
    return rows
