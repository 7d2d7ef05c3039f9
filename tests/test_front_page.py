"""The reader-facing helpers (issue 15): the one table display, the one palette, paper B's claim table and
the front page's sentences and section labels. Fast: no book build, no training."""

import nbformat
import pandas as pd
import pytest

from kl_repro.core import plotting, store
from kl_repro.core.tables import NEGATIVE_NOTE, display_table, sig
from kl_repro.core.verdict import NOT_TESTED, WORDS
from kl_repro.paper_b.claims import CLAIMS, claims_summary, verdict_text
from kl_repro.pipeline import front_page


def test_sig_prints_consistent_significant_digits():
    assert [sig(x) for x in (0.012690, 310.0858, 1.9e-5, -583.95, 2000, None, float("nan"), True)] == \
        ["0.0127", "310", "1.9e-05", "-584", "2000", "–", "–", "yes"]
    assert sig([0.123456, 2]) == "[0.123, 2]"
    assert sig(123456.0) == "123,456"


def test_display_table_has_no_index_pads_cells_and_explains_negative_estimates():
    html = display_table([{"run": "KL", "KD_clf": -584.2, "FD_clf": 0.1267}], caption="ours: a test").to_html()
    assert "row_heading" not in html  # no index column
    assert "padding" in html and 'class="kl-table"' in html
    assert "-584" in html and "0.127" in html
    assert NEGATIVE_NOTE in html and "ours: a test." in html
    plain = display_table(pd.DataFrame({"a": [1.23456]}), caption="paper: Table 1").to_html()
    assert NEGATIVE_NOTE not in plain and "1.23" in plain
    named = display_table(pd.DataFrame({"x": [1.0]}, index=pd.Index(["VP"], name="process")))
    assert list(named.data.columns) == ["process", "x"]  # a meaningful index becomes a column


def test_one_colour_per_model_across_figures():
    models = ["Baseline-b16", "Baseline-b128", "Baseline-T20-b16", "KL-8d-b16", "KL-8d-b32", "KL*-8d-b16", "KL-10d-b16"]
    colours = [plotting.color_for(m) for m in models]
    assert len(set(colours)) == len(models)
    assert plotting.color_for("KL-8d-b16") == plotting.color_for("KL-8d-b16")  # stable
    assert plotting.color_for("KL-8d-b16 (w)") not in colours  # a fine-tuned run has its own shade
    partial = {plotting.color_for(f"KL-10d{k}-b16") for k in (1, 2, 3, 4)}
    assert len(partial) == 4 and not partial & set(colours)
    assert plotting.color_for("paper") == plotting.PAPER_COLOUR


def test_paper_b_claims_read_per_claim_sentences_and_say_when_untested(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    rows = claims_summary("smoke")
    assert len(rows) == len(CLAIMS) and all(r["verdict"].startswith(NOT_TESTED) for r in rows)
    store.save_artefact("smoke", "B.table1", {"verdict": "joined", "verdicts": {
        "speed": "Does not hold at this scale: 1.3x.", "fid_cost": "Holds: FD_clf 1300 against 11.9."}})
    rows = {r["claim"][:20]: r["verdict"] for r in claims_summary("smoke")}
    assert "Does not hold at this scale: 1.3x." in rows.values() and "Holds: FD_clf 1300 against 11.9." in rows.values()
    assert verdict_text({"a": "Holds: x.", "b": "Inconclusive: y."}) == "Holds: x. Inconclusive: y."


def test_front_page_cells_are_cut_sentences_with_the_word_in_bold():
    long = "Partly holds (toy2d): KL-8d-b16 was faster (1.3x) but short of the paper's 2x. " + "More detail. " * 40
    cell = front_page._verdict_cell(long, "A.speedup", {"A.speedup": "heading"})
    assert cell.startswith("**Partly holds** (toy2d)") and "paper's 2x." in cell
    assert "More detail" not in cell and "{ref}`more <art-a-speedup>`" in cell
    assert front_page._verdict_short("Illustration only.", claim=False) == "Illustration only."
    assert front_page._verdict_short("Speed (not reproduced): 2x.").startswith("**(no verdict word)**")
    assert tuple(w for w, _ in front_page.WORD_MEANINGS) == WORDS


def test_sections_that_show_artefacts_get_labels():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter"), nbformat.v4.new_markdown_cell("## Table 1 — best score"),
                nbformat.v4.new_code_cell("chapter.table1(res)"), nbformat.v4.new_markdown_cell("## Fig. 2"),
                nbformat.v4.new_code_cell('fig = chapter.fig2(res, "a")'), nbformat.v4.new_code_cell('chapter.fig2(res, "b")')]
    found = front_page.label_sections(nb, ["A.table1", "A.fig2a", "A.fig2b", "A.fig9"])
    assert found == {"A.table1": "Table 1 — best score", "A.fig2a": "Fig. 2", "A.fig2b": "Fig. 2"}
    assert nb.cells[1].source.startswith("(art-a-table1)=\n## Table 1")
    assert "(art-a-fig2a)=" in nb.cells[3].source and "(art-a-fig2b)=" in nb.cells[3].source


@pytest.mark.parametrize("art_id,label", [("A.table1", "art-a-table1"), ("B.spectra_ou", "art-b-spectra-ou")])
def test_anchor_labels(art_id, label):
    assert front_page.anchor_label(art_id) == label


def test_the_speedup_headline_gets_one_follow_up_per_produced_experiment(tmp_path, monkeypatch):
    """Under paper A's speed-up headline: the readings and the capacity ladder, each only where it was made."""
    from kl_repro.core.profiles import load_profile
    from kl_repro.pipeline.front_page import _sub_lines

    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    mnist = load_profile("mnist")
    assert _sub_lines(mnist, "A", "speedup", {}) == []
    store.save_artefact("mnist", "A.readings", {"verdict": "Not tested by this experiment, because: absent here."})
    store.save_artefact("mnist", "A.ladder", {"verdict": "Inconclusive: 1.1x [0.8, 1.5] at 182 k parameters."})
    lines = _sub_lines(mnist, "A", "speedup", {"A.ladder": "x"})
    assert len(lines) == 1 and "**Does the gap close as the network grows?**" in lines[0]
    assert "Inconclusive" in lines[0] and "<art-a-ladder>" in lines[0]
    store.save_artefact("mnist", "A.readings", {"verdict": "Inconclusive: 1.2x under our reading."})
    assert len(_sub_lines(mnist, "A", "speedup", {})) == 2
