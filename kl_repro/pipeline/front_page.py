"""The book's front page: each paper's headline verdicts, the claim-by-claim tables, the status table.

Everything here is read from the artefacts the notebooks stored (:func:`kl_repro.core.store.load_artefact`)
and from the claim summaries of the two papers (:func:`kl_repro.paper_a.verdicts.claims_summary`,
:func:`kl_repro.paper_b.claims.claims_summary`).  Every cell is a sentence, never a raw dict: a verdict
starts with a word of :mod:`kl_repro.core.verdict`, is cut after its first sentence (about
:data:`CELL_CHARS` characters) and links to the exact section of the chapter that shows it.  The section
targets are MyST labels (:func:`anchor_label`) that :func:`label_sections` puts before the heading of the
cell that shows each artefact, when the book copies the executed notebooks.
"""

from __future__ import annotations

import re
from typing import Iterable

from kl_repro.core import store
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import Profile
from kl_repro.core.registry import artefact_registry, paper_values
from kl_repro.core.verdict import NOT_TESTED, verdict_word
from kl_repro.paper_a.matrix import planned_runs
from kl_repro.paper_a.verdicts import claims_summary as claims_a
from kl_repro.paper_b.claims import claims_summary as claims_b, verdict_text

__all__ = ["HEADLINES", "CELL_CHARS", "anchor_label", "label_sections", "is_produced", "status_rows",
           "headlines_markdown", "claims_markdown", "status_markdown", "cost_note", "words_markdown", "WORD_MEANINGS"]

#: Longest verdict text shown in a table cell; the rest is one click away, in its section.
CELL_CHARS = 220

#: Each paper's headline claims, in the order the papers make them: (claim key in paper_values, short sentence).
HEADLINES = {
    "A": (("speedup", "KL diffusion reaches the baseline's best FID about twice as fast"),
          ("final_fid", "KL diffusion ends at a lower FID than the baseline"),
          ("kl_star_cost", "KL* cuts the cost of a step to about the baseline's")),
    "B": (("speedup", "The eigenfunction sampler is 100-260x faster than PC1000"),
          ("fid_cost", "It pays for the speed with a worse FID (42-44 against 2.2-2.4)"),
          ("robust_L", "Its quality is robust to the number of eigenfunctions L"),
          ("what_it_samples", "Its density p0 approximates the data distribution")),
}

WORD_MEANINGS = (
    ("Holds", "the evidence (an interval over seeds, or an exact check) lies on the paper's side of its value."),
    ("Partly holds", "the effect has the paper's sign beyond the noise but not its size, or only part of the claim holds."),
    ("Does not hold at this scale", "the interval excludes the paper's claim at the scale this profile ran; "
                                    "a larger profile may differ."),
    ("Inconclusive", "the interval straddles the no-effect value: the noise is larger than the effect."),
    ("Not tested by this experiment", "the runs that could speak to the claim are missing at this profile, or the "
                                      "experiment measures something else; the sentence says why."),
)

#: The chapter call that shows an artefact, where it is not ``chapter.<id suffix>(`` or the quoted id.
CALLS = {"A.eq8_spectrum": "brownian_spectrum(", "A.kl_paths": "sample_paths(", "A.tableA1": "grid_table(",
         "A.fig2a": 'fig2(res, "a")', "A.fig2b": 'fig2(res, "b")', "A.fig2c": 'fig2(res, "c")', "A.fig6a": "fig6(",
         "A.fig6b": "fig6(", "B.spectra_ou": "chapter.ou(", "B.spectra_mixture": "chapter.mixture(",
         "B.spectra_images": "chapter.images(", "B.spectra_side_by_side": "side_by_side(", "B.E3": "chapter.e3("}
_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*$", re.M)


def anchor_label(art_id: str) -> str:
    """The MyST label of the section that shows artefact ``art_id`` (``A.table1`` -> ``art-a-table1``)."""
    return "art-" + re.sub(r"[^a-z0-9]+", "-", art_id.lower()).strip("-")


def _shows(source: str, art_id: str) -> bool:
    if art_id in CALLS:
        return CALLS[art_id] in source
    suffix = art_id.split(".", 1)[1]
    return f'"{art_id}"' in source or re.search(rf"\.{re.escape(suffix)}\(", source, re.I) is not None


def label_sections(nb, art_ids: Iterable[str]) -> dict[str, str]:
    """Put a MyST label before the heading above the code cell that shows each of ``art_ids``, in place.

    Returns ``{artefact id: heading text}`` for the artefacts found; several labels may share a heading.
    """
    found, heading_of = {}, {}
    last = None  # (cell index, heading text) of the latest heading
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heads = _HEADING.findall(cell.source)
            if heads and len(heads[-1][0]) >= 2:
                last = (i, heads[-1][1])
        elif cell.cell_type == "code" and last is not None:
            for a in art_ids:
                if a not in found and _shows(cell.source, a):
                    found[a], heading_of[a] = last[1], last[0]
    for a, i in heading_of.items():
        cell = nb.cells[i]
        pos = [m.start() for m in _HEADING.finditer(cell.source) if len(m.group(1)) >= 2][-1]
        cell.source = cell.source[:pos] + f"({anchor_label(a)})=\n" + cell.source[pos:]
    return found


def _cut(text: str, limit: int = CELL_CHARS) -> str:
    """The first sentence of ``text`` (two if the first is a bare word), at most ``limit`` characters."""
    text = " ".join(str(text).split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z(])", text[: limit + 1])
    first = text[: m.start()] if m and m.start() > 40 else text
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …"


def _esc(text) -> str:
    """Text with markdown's emphasis characters escaped (``KL*`` stays ``KL*``)."""
    return str(text).replace("*", "\\*").replace("_", "\\_")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ref(art_id: str, text: str, sections: dict) -> str:
    return f"{{ref}}`{text} <{anchor_label(art_id)}>`" if art_id in sections else text


def is_produced(art: dict | None) -> bool:
    """Whether an artefact was made at this profile (stored, and not a "not tested here" record)."""
    if art is None:
        return False
    verdict = verdict_text(art.get("verdict"))
    return verdict_word(verdict) != NOT_TESTED and not verdict.startswith("Cannot be tested")


def _summary_text(art: dict, key: str) -> str:
    """The short ``paper_summary`` / ``ours_summary`` sentence of an artefact, or a sentence pointing to its section."""
    text = art.get(f"{key}_summary")
    if isinstance(text, str) and text.strip():
        return text
    value = art.get(key)
    if isinstance(value, dict):
        for k in ("claim", "text", "note", "source"):
            if isinstance(value.get(k), str):
                return value[k]
    if isinstance(value, str):
        return value
    return "see its section" if key == "ours" else ""


def status_rows(profile: Profile) -> list[dict]:
    """One row per registry entry: id, title, chapter, in_paper, produced, paper, ours, verdict (sentences)."""
    rows = []
    for entry in artefact_registry():
        art = store.load_artefact(profile, entry["id"])
        row = dict(entry, produced=is_produced(art), stored=art is not None, paper="", ours="",
                   verdict="Not tested by this experiment, because its chapter was not run at this profile.")
        if art is not None:
            row.update(paper=_summary_text(art, "paper"), ours=_summary_text(art, "ours"),
                       verdict=verdict_text(art.get("verdict")) or "(no verdict stored)", figure=art.get("figure"))
        rows.append(row)
    return rows


def _verdict_short(verdict: str, limit: int = CELL_CHARS, claim: bool = True) -> str:
    """The verdict's first sentence, its verdict word in bold (a claim's without one is marked as such)."""
    word = verdict_word(verdict)
    short = _cut(verdict, limit)
    if word:
        return f"**{word}**" + _esc(short[len(word):])
    return "**(no verdict word)** " + _esc(short) if claim else _esc(short)


def _verdict_cell(verdict: str, art_id: str, sections: dict, claim: bool = True) -> str:
    short = _verdict_short(verdict, claim=claim)
    more = f" ({_ref(art_id, 'more', sections)})" if art_id in sections and _cut(verdict) != verdict else ""
    return _cell(short) + more


def _claim_rows(paper: str, profile: str) -> list[dict]:
    return claims_a(profile) if paper == "A" else claims_b(profile)


#: Headline claims with a follow-up question answered by another artefact: (paper, claim key) -> (question, artefact).
FOLLOW_UPS = {("A", "speedup"): (("Does any reading of the lost equations make it hold?", "A.readings"),
                                  ("Does the gap close as the network grows?", "A.ladder"))}


def _sub_lines(profile: Profile, paper: str, key: str, sections: dict) -> list[str]:
    """The follow-ups under a headline (:data:`FOLLOW_UPS`) whose artefact was made at this profile."""
    lines = []
    for question, art_id in FOLLOW_UPS.get((paper, key), ()):
        art = store.load_artefact(profile.name, art_id)
        if is_produced(art):
            lines.append(f"  - **{_esc(question)}** {_verdict_short(art['verdict'], 260)} "
                         f"{_ref(art_id, 'see the section', sections)}")
    return lines


def headlines_markdown(profile: Profile, sections: dict) -> str:
    """Each paper's headline claims, one short line each: claim, verdict word, the numbers behind it, a link."""
    out = []
    titles = {"A": "Paper A: truncated-KL diffusion trains faster", "B": "Paper B: the Fokker-Planck eigenfunction sampler"}
    for paper in ("A", "B"):
        claims = paper_values(paper)["claims"]
        by_text = {r["claim"]: r for r in _claim_rows(paper, profile.name)}
        out += [f"### {titles[paper]}", ""]
        for key, short in HEADLINES[paper]:
            row = by_text.get(claims[key]["text"])
            if row is None:
                continue
            link = _ref(row["shown in"], "see the section", sections)
            out.append(f"- **{_esc(short)}** ({_esc(row['source'])}). {_verdict_short(verdict_text(row['verdict']), 260)} {link}")
            out += _sub_lines(profile, paper, key, sections)
        out.append("")
    return "\n".join(out)


def claims_markdown(profile: Profile, sections: dict) -> str:
    """Claim-by-claim tables of both papers: claim, source, our verdict (cut, linked), the artefact."""
    out = []
    for paper, heading in (("A", "Paper A, claim by claim"), ("B", "Paper B, claim by claim")):
        out += [f"### {heading}", "", "| claim | source | our verdict | shown in |", "|---|---|---|---|"]
        for r in _claim_rows(paper, profile.name):
            art = r["shown in"]
            out.append(f"| {_cell(_esc(r['claim']))} | {_cell(_esc(r['source']))} | "
                       f"{_verdict_cell(verdict_text(r['verdict']), art, sections)} | {_ref(art, art, sections)} |")
        out.append("")
    return "\n".join(out)


def cost_note(profile: Profile) -> str:
    """Which measurement of the cost of a step Table 2 and Fig. 5 show (they differ, and both are right)."""
    try:
        plan = planned_runs(profile)
    except ConfigError:
        return ""
    steps = {a: sorted({p.steps for p in plan if a in p.spec.artefacts}) for a in ("A.table2", "A.fig5")}
    if not (steps["A.table2"] and steps["A.fig5"]):
        return ""
    return ("**Two measurements of a step's cost.** Table 2 (A.table2) times short runs made only to measure a step "
            f"({'/'.join(map(str, steps['A.table2']))} steps each); Fig. 5 (A.fig5) takes the median step time of its full "
            f"training runs ({'/'.join(map(str, steps['A.fig5']))} steps). They are separate measurements on a shared "
            "machine, so their ratios to the baseline differ (KL-8d's, for one); read Table 2 for the cost of a step and "
            "Fig. 5 for the wall-clock of those training runs.")


def status_markdown(profile: Profile, sections: dict, chapters_present: Iterable[str]) -> str:
    """The status tables (paper items, then our checks): sentences in every cell, each row linked to its section."""
    present = set(chapters_present)
    rows = status_rows(profile)
    paper_rows = [r for r in rows if r["in_paper"]]
    missing = [r for r in paper_rows if not r["produced"]]
    head = (f"**Built with profile `{profile.name}`**: {len(paper_rows) - len(missing)} of {len(paper_rows)} tables "
            "and figures of the papers made at this profile")
    head += (f"; not made here: {', '.join(r['id'] for r in missing)} (the verdict says why)." if missing else ".")
    out = [head, ""]
    for in_paper, heading in ((True, "Status of every table and figure"), (False, "Checks this project adds")):
        out += [f"### {heading}", "", "| item | paper | ours | verdict | shown in |", "|---|---|---|---|---|"]
        for r in (r for r in rows if r["in_paper"] == in_paper):
            where = (_ref(r["id"], "section", sections) if r["id"] in sections else
                     f"{{doc}}`chapter </executed/{r['chapter']}>`" if r["chapter"] in present else "(chapter not built)")
            out.append(f"| **{r['id']}** {_cell(_esc(r['title']))} | {_cell(_esc(_cut(r['paper'], 160)))} | "
                       f"{_cell(_esc(_cut(r['ours'], 160)))} | "
                       f"{_verdict_cell(r['verdict'], r['id'], sections, claim=False)} | {where} |")
        out.append("")
        if in_paper and (note := cost_note(profile)):
            out += [note, ""]
    return "\n".join(out)


def words_markdown() -> str:
    """The five verdict words (:data:`kl_repro.core.verdict.WORDS`), explained once."""
    return "\n".join(f"- **{w}**: {m}" for w, m in WORD_MEANINGS) + "\n"
