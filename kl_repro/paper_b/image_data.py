"""Images for paper B's experiments: the training pool, the two data scales, the shared score models.

score_sde's models see VE data in ``[0, 1]`` and VP data in ``[-1, 1]`` (Methods B.1); the library's
images are ``(N, C, H, W)`` floats in ``[-1, 1]`` or uint8 (:mod:`kl_repro.core.images`).  The score
model is the ideal score of the pool (exact, memorising: the reference) or a small network trained on
the pool by DSM (:mod:`kl_repro.paper_b.score_training`; :func:`with_scores`); the Deviations page says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from kl_repro.core.config import ConfigError
from kl_repro.data import DataConfig, load_images
from kl_repro.paper_b.scores import IdealScore
from kl_repro.paper_b.sde import VESDE, VPSDE

__all__ = ["load_pool", "to_model", "to_library", "ImageSetup", "image_setup", "setup_from_images", "with_scores", "IDEAL"]

IDEAL = "ideal score of the pool"  # the score label of the exact-score reference


def load_pool(dataset: str, n: int, split: str = "train", resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first ``n`` unaugmented images of ``dataset`` as uint8 ``(n, C, H, W)`` and labels, or ``None`` if absent."""
    try:
        return load_images(DataConfig(name=dataset, split=split, subset=n, flip=False, resolution=resolution))
    except (ConfigError, FileNotFoundError, OSError):
        return None


def to_model(images_uint8: torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 images to the model's scale (score_sde: VE ``[0, 1]``, VP ``[-1, 1]``), float64."""
    x = images_uint8.double() / 255.0
    return x if kind == "ve" else 2.0 * x - 1.0


def to_library(x_model: torch.Tensor, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Model-scale samples (flat or not) to library images ``(N, C, H, W)`` float32 in ``[-1, 1]``, clipped."""
    x = x_model.reshape(x_model.shape[0], *shape).float()
    x = 2.0 * x - 1.0 if kind == "ve" else x
    return x.clamp(-1.0, 1.0)


@dataclass
class ImageSetup:
    """Data and score models of the image experiments: ``images`` uint8 ``(n, C, H, W)``, model-scale pools and scores per SDE.

    ``score_label`` names the score model in every row and verdict (:data:`IDEAL` or the trained network);
    ``networks``: per SDE, the trained network's facts (label, parameters, training steps and seconds).
    """

    dataset: str
    images: torch.Tensor
    test: torch.Tensor | None
    pools: dict
    scores: dict
    sdes: dict
    score_label: str = IDEAL
    networks: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def train_library(self, kind: str) -> torch.Tensor:
        """The pool as library images ``(n, C, H, W)`` in ``[-1, 1]`` (the bank for memorisation checks)."""
        return to_library(self.pools[kind].reshape(len(self.images), -1), kind, self.shape)


def setup_from_images(dataset: str, images: torch.Tensor, test: torch.Tensor | None, pc_N: int = 1000) -> ImageSetup:
    """An :class:`ImageSetup` on uint8 ``images``: VE/VP SDEs with ``pc_N`` steps and the ideal score of each pool."""
    sdes = {"ve": VESDE(N=pc_N), "vp": VPSDE(N=pc_N)}
    pools = {k: to_model(images, k) for k in sdes}
    scores = {k: IdealScore(pools[k], sdes[k]) for k in sdes}
    return ImageSetup(dataset, images, test, pools, scores, sdes)


def image_setup(dataset: str, pool: int, pc_N: int = 1000) -> ImageSetup:
    """The first ``pool`` training images of ``dataset`` and the ideal VE/VP scores of them (the shared score model)."""
    data = load_pool(dataset, pool)
    if data is None:
        raise ConfigError(f"data set {dataset!r} is not available (set $KL_REPRO_DATA to the folder holding it)")
    test = load_pool(dataset, 10_000, split="test")
    return setup_from_images(dataset, data[0], None if test is None else test[0], pc_N)


def with_scores(setup: ImageSetup, scores: dict, label: str, networks: dict | None = None) -> ImageSetup:
    """``setup`` with other score models per SDE (e.g. trained networks), the same pools, SDEs and images."""
    return replace(setup, scores=dict(scores), score_label=label, networks=dict(networks or {}))
