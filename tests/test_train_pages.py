"""Each per-run page (notebook 03 with a run's injected parameters) names the same run folder as
the profile's matrix, so `make reproduce` trains a run once and its page reuses it."""

import json
from pathlib import Path

import pytest

from kl_repro.chapters.train_page import TrainPageConfig
from kl_repro.core.profiles import PROFILES, load_profile
from kl_repro.paper_a.matrix import planned_runs, training_pages
from kl_repro.paper_a.training.config import run_name

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_train.ipynb"


def _cell_defaults() -> dict:
    nb = json.loads(NOTEBOOK.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    scope: dict = {}
    exec("".join(cell["source"]), {}, scope)  # literals only
    return scope


@pytest.mark.parametrize("name", PROFILES)
def test_every_run_page_resolves_to_its_planned_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_RESULTS", str(tmp_path))
    profile = load_profile(name)
    defaults = _cell_defaults()
    runs = {p.run_dir.name for p in planned_runs(profile)}
    for page, title, params in training_pages(profile):
        cfg = TrainPageConfig(**{**defaults, **params})
        assert run_name(cfg.run_config()) in runs, (page, title)
