"""The layering of the package (CONTRIBUTING.md, "Layout"): every import points down the layers,
paper A and paper B never import each other, and nothing imports in a circle."""

from pathlib import Path

import pytest

from kl_repro.pipeline.notebooks import imported_modules

PACKAGE = Path(__file__).resolve().parents[1] / "kl_repro"
RANK = {"core": 0, "data": 1, "nets": 1, "schedule": 1, "evaluation": 2, "paper_a": 3, "paper_b": 3,
        "chapters": 4, "pipeline": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def _edges() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges[name] = {m for m in imported_modules(path.read_text(), package) if m != name and m != "kl_repro"}
    return edges


EDGES = _edges()


def test_every_module_lives_in_a_known_layer():
    assert {_layer(m) for m in MODULES} - {None} == set(RANK)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_imports_point_down_the_layers(module):
    up = [t for t in EDGES[module] if _layer(t) and RANK[_layer(t)] > RANK[_layer(module)]]
    assert up == [], f"{module} imports a higher layer: {up}"


def test_the_two_papers_do_not_import_each_other():
    cross = [(m, t) for m, ts in EDGES.items() for t in ts
             if {_layer(m), _layer(t)} == {"paper_a", "paper_b"}]
    assert cross == []


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in EDGES.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
