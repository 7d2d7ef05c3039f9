"""Paper B's experiment drivers: notebook parameters match their configs, and the cheap experiments give known answers."""

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from kl_repro.paper_b import experiments as fx
from kl_repro.paper_b import report as fp_report
from kl_repro.core.config import ConfigError
from kl_repro.core.profiles import PROFILES, notebook_parameters


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CASES = [("05_eigen_spectra", fx.EigenSpectraConfig), ("06_operator_sampler", fx.OperatorSamplerConfig)]


def _parameters_cell(stem: str) -> dict:
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    ns: dict = {}
    exec("".join(cells[0]["source"]), {}, ns)  # literals only
    return ns


@pytest.mark.parametrize("stem,cls", CASES)
def test_parameters_cell_maps_one_to_one_onto_the_config(stem, cls):
    params = _parameters_cell(stem)
    assert set(params) == {f.name for f in fields(cls)}
    cls(**params)  # the notebook's defaults validate


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("stem,cls", CASES)
def test_every_profile_builds_a_valid_config(profile, stem, cls):
    cfg = cls(**notebook_parameters(profile, stem))
    assert cfg.profile == profile


def test_bad_notebook_configs_are_config_errors():
    with pytest.raises(ConfigError, match="pool"):
        fx.OperatorSamplerConfig(M=2000, pool=1500)
    with pytest.raises(ConfigError, match="L"):
        fx.OperatorSamplerConfig(L_values=(1, 5, 2000))
    with pytest.raises(ConfigError, match="profile"):
        fx.EigenSpectraConfig(profile="laptop")
    with pytest.raises(ConfigError, match="threads"):
        fx.OperatorSamplerConfig(threads=0)


def test_e1_biorthogonal_beats_the_papers_rule():
    e1 = fx.e1_ou_propagation(M=300, n_prior=2000, seed=0)
    rows = [r for r in e1["rows"] if r["L"] == 5]
    assert all(r["biorthogonal, e^{+lam tau}"] < 0.05 for r in rows)
    assert all(r["paper (14), e^{-lam tau}"] > 3 * r["biorthogonal, e^{+lam tau}"] for r in rows)
    art = fp_report.artefact_e1(fx.OperatorSamplerConfig(profile="smoke"), e1)
    assert {"ours", "paper", "verdict"} <= set(art) and "biorthogonal" in art["verdict"]["coefficients"]


def test_ou_spectrum_counts_spurious_eigenvalues():
    ou = fx.ou_spectrum(M=300, zeta=1.0, n_show=6)
    assert ou["spurious_truncated"] == 0 and ou["spurious_tikhonov"] >= 5
    np.testing.assert_allclose(ou["lam_truncated"][:3], [0, -1, -2], atol=0.1)
    assert max(ou["density_rel_l1"][:2]) < 0.02


def test_model_and_library_scales_round_trip():
    u8 = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    for kind in ("ve", "vp"):
        x = fx.to_model(u8, kind)
        lib = fx.to_library(x.reshape(1, -1), kind, (1, 1, 3))
        np.testing.assert_allclose(lib.numpy().ravel(), u8.numpy().ravel() / 127.5 - 1, atol=1e-6)
    assert float(fx.to_model(u8, "ve").max()) == 1.0 and float(fx.to_model(u8, "vp").min()) == -1.0
