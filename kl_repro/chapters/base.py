"""The configuration every chapter notebook shares: which profile, which seed, how many threads.

A notebook's ``parameters`` cell holds literals that map one-to-one onto the fields of its chapter
config (a subclass of :class:`ChapterConfig`); the first code cell builds and prints it, which
validates every value before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from threadpoolctl import threadpool_limits

from kl_repro.core.config import Config, require
from kl_repro.core.profiles import DEFAULT_PROFILE, Profile, load_profile

__all__ = ["ChapterConfig", "set_threads"]


@dataclass(frozen=True)
class ChapterConfig(Config):
    """Fields shared by every chapter: ``profile`` (a profile name), ``seed``, ``threads`` (None: leave as is)."""

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        load_profile(self.profile)  # an unknown name raises ConfigError listing the profiles
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require(self.threads is None or self.threads >= 1, f"threads must be >= 1 or None, got {self.threads}")

    @property
    def profile_obj(self) -> Profile:
        """The :class:`~kl_repro.core.profiles.Profile` this chapter runs under."""
        return load_profile(self.profile)


def set_threads(n: int | None) -> None:
    """Limit torch and the BLAS/OpenMP pools to ``n`` threads for the rest of the process (``None``: no change)."""
    if n is None:
        return
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
