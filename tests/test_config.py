"""Configs refuse bad input before any computation; profiles are data."""

import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from kl_repro.core.config import Config, ConfigError, config_hash, from_dict, override, parse_set_option, require, to_dict
from kl_repro.chapters.kl_expansion import KLExpansionConfig
from kl_repro.chapters.path_smoothness import SmoothnessConfig
from kl_repro.core.profiles import PROFILES, load_profile


@dataclass(frozen=True)
class Demo(Config):
    d: int = 8
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    tag: str | None = None

    def check(self):
        require(self.d >= 1, f"d must be >= 1, got {self.d}")


def test_types_are_checked_and_coerced():
    assert Demo(rate=1).rate == 1.0 and isinstance(Demo(rate=1).rate, float)
    assert Demo(sizes=[3, 4]).sizes == (3, 4)
    for bad in ({"d": "8"}, {"d": 2.5}, {"d": True}, {"mode": "c"}, {"sizes": (1, "x")}, {"tag": 3}, {"d": 0}):
        with pytest.raises(ConfigError, match="Demo"):
            Demo(**bad)


def test_unknown_keys_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown key.*'dd'.*valid keys are: d, rate"):
        from_dict(Demo, {"dd": 3})
    with pytest.raises(ConfigError):
        override(Demo(), {"nope": 1})


def test_round_trip_and_hash():
    cfg = Demo(d=3, sizes=(5,))
    assert from_dict(Demo, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(Demo(d=3, sizes=[5]))
    assert config_hash(cfg) != config_hash(cfg.replace(d=4))
    assert parse_set_option("train.steps=100") == ("train.steps", 100)
    assert parse_set_option("data.name=mnist") == ("data.name", "mnist")
    with pytest.raises(ConfigError):
        parse_set_option("nokey")


@pytest.mark.parametrize("kwargs", [
    {"n_grid": -5}, {"n_grid": "2000"}, {"d_values": [0, 2]}, {"profile": "tpu"}, {"n_eig": 0}, {"ou_theta": -1.0},
])
def test_kl_chapter_parameters_are_validated(kwargs):
    with pytest.raises(ConfigError):
        KLExpansionConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"grids": [100, -1]}, {"n_paths": 0}, {"d_values": []}, {"gc_steps": -1}])
def test_smoothness_chapter_parameters_are_validated(kwargs):
    with pytest.raises(ConfigError):
        SmoothnessConfig(**kwargs)


def test_every_profile_builds_the_notebook_configs():
    for name in PROFILES:
        prof = load_profile(name)
        assert prof["name"] == name and prof["description"]
        KLExpansionConfig(**prof.notebook_parameters("01_kl_expansion"))
        SmoothnessConfig(**prof.notebook_parameters("02_path_smoothness"))
    with pytest.raises(ConfigError, match="choose one of: smoke, cpu, mnist, gpu, paper"):
        load_profile("laptop")


def test_cli_refuses_an_unknown_profile_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kl_repro.pipeline.cli", "reproduce", "--profile", "laptop"],
                          capture_output=True, text=True, env={"KL_REPRO_RESULTS": str(tmp_path), "PATH": ""})
    assert proc.returncode == 2
    assert "unknown profile 'laptop'" in proc.stderr
    assert not any(tmp_path.iterdir())
