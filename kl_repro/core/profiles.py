"""Reproduction profiles: ``smoke``, ``cpu``, ``mnist`` and ``paper``.

A profile is data, one TOML file per profile in ``kl_repro/profiles/``: the
parameters each notebook is executed with (``[notebooks.<name>]``) and, for the
results chapters, the run matrices (``[paper_a]``, ``[paper_b]``).  ``make reproduce
PROFILE=...`` and every notebook's ``profile`` parameter select one by name.

* ``smoke``: every artefact in minutes, for tests and CI.
* ``cpu``: the default; embedded data (``digits``, ``toy2d``), every table and figure at
  reduced scale, within an hour on a 2-core CPU.
* ``mnist``: real MNIST (``KL_REPRO_DATA``) at a scale a 2-core CPU finishes in hours.
* ``paper``: the papers' settings, for a GPU machine.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

from kl_repro.core.config import ConfigError

__all__ = ["PROFILES", "DEFAULT_PROFILE", "check_profile_name", "load_profile", "notebook_parameters"]

PROFILES: tuple[str, ...] = ("smoke", "cpu", "mnist", "paper")
DEFAULT_PROFILE = "cpu"


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a known profile, else raise :class:`ConfigError` listing them."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return name


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    text = resources.files("kl_repro").joinpath("profiles", f"{name}.toml").read_text()
    data = tomllib.loads(text)
    if data.get("name") != name:
        raise ConfigError(f"profile file {name}.toml declares name={data.get('name')!r}")
    return data


def load_profile(name: str) -> dict[str, Any]:
    """The profile ``name`` as a dict (a fresh copy; the file is the source of truth)."""
    import copy

    return copy.deepcopy(_load(check_profile_name(name)))


def notebook_parameters(profile: str, notebook: str) -> dict[str, Any]:
    """Papermill parameters of ``notebook`` (file stem) under ``profile``, including ``profile`` itself."""
    params = dict(load_profile(profile).get("notebooks", {}).get(notebook, {}))
    params["profile"] = profile
    return params
