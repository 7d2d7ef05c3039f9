"""The registry of artefacts (every table and figure of both papers, plus our own checks) and the
papers' reported numbers, as data in ``kl_repro/paper_values/``.

``artefacts.toml`` lists the artefacts in book order with their chapter; ``paper_a.toml`` and
``paper_b.toml`` hold the numbers each paper reports, each with its source (table, section).
"""

from __future__ import annotations

import copy
import tomllib
from functools import lru_cache
from importlib import resources

__all__ = ["artefact_registry", "paper_values"]


@lru_cache(maxsize=None)
def _toml(name: str) -> dict:
    return tomllib.loads(resources.files("kl_repro").joinpath("paper_values", name).read_text())


def artefact_registry() -> list[dict]:
    """Every table/figure of both papers and our added checks, in book order."""
    return [dict(a) for a in _toml("artefacts.toml")["artefact"]]


def paper_values(paper: str) -> dict:
    """The numbers paper ``"a"`` or ``"b"`` reports (``paper_values/paper_<a|b>.toml``), each with its source."""
    return copy.deepcopy(_toml(f"paper_{paper.lower()}.toml"))
