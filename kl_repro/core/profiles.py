"""Reproduction profiles: ``smoke``, ``cpu``, ``mnist``, ``gpu`` and ``paper``.

A profile is data, one TOML file per profile in ``kl_repro/profiles/``: the parameters each
notebook is executed with (``[notebooks.<name>]``) and, for the results chapters, paper A's run
matrix (``[paper_a]``).  ``make reproduce PROFILE=...`` and every notebook's ``profile`` parameter
select one by name.

The name is resolved once, at the entry point (the command line, a notebook's chapter config),
by :func:`load_profile`, which returns one immutable :class:`Profile` per name; everything below
takes that object.

* ``smoke``: every artefact in minutes, for tests and CI.
* ``cpu``: the default; embedded data (``digits``, ``toy2d``), every table and figure at
  reduced scale, within an hour on a 2-core CPU.
* ``mnist``: real MNIST (``KL_REPRO_DATA``) at a scale a 2-core CPU finishes in hours.
* ``gpu``: paper A's headline claims at the paper's network on one GPU within about a day.
* ``paper``: the papers' settings, for a GPU machine.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from kl_repro.core.config import ConfigError

__all__ = ["PROFILES", "DEFAULT_PROFILE", "Profile", "load_profile", "as_profile"]

PROFILES: tuple[str, ...] = ("smoke", "cpu", "mnist", "gpu", "paper")
DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True, eq=False)
class Profile:
    """One profile file, read once.  Accessors hand out copies, so nobody can edit the profile."""

    name: str
    _data: dict[str, Any] = field(repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the top-level entry ``key`` (``default`` when absent)."""
        return copy.deepcopy(self._data.get(key, default))

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            raise KeyError(f"profile {self.name!r} has no entry {key!r}")
        return copy.deepcopy(self._data[key])

    @property
    def description(self) -> str:
        return str(self._data.get("description", ""))

    def notebook_parameters(self, notebook: str) -> dict[str, Any]:
        """Papermill parameters of ``notebook`` (file stem), including ``profile`` itself."""
        params = copy.deepcopy(self._data.get("notebooks", {}).get(notebook, {}))
        params["profile"] = self.name
        return params

    def fingerprint(self) -> str:
        """The whole profile as canonical JSON (keys notebook executions on it)."""
        return json.dumps(self._data, sort_keys=True, default=str)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return name


@lru_cache(maxsize=None)
def load_profile(name: str) -> Profile:
    """The profile ``name``; an unknown name raises :class:`ConfigError` listing the profiles."""
    text = resources.files("kl_repro").joinpath("profiles", f"{_check_name(name)}.toml").read_text()
    data = tomllib.loads(text)
    if data.get("name") != name:
        raise ConfigError(f"profile file {name}.toml declares name={data.get('name')!r}")
    return Profile(name, data)


def as_profile(profile: Profile | str) -> Profile:
    """``profile`` itself, or the profile of that name: for the few entry points that take either."""
    return profile if isinstance(profile, Profile) else load_profile(profile)
