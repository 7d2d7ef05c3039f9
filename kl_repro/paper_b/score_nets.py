"""Paper B's baseline score networks at CIFAR-10 size, built from diffusers' ``UNet2DModel``.

Paper B, Table 1 and Sec. 4.1: the PC1000 baselines are Song et al.'s (2021) continuous-time
CIFAR-10 checkpoints **NCSN++ deep** (VE) and **DDPM++ deep** (VP), whose FID/IS the table quotes
(Methods B.1).  Only their *cost* matters here (the speed claim of Table 1, :mod:`.speed`): a
forward pass costs the same whatever the weights, so the networks are built with random weights
and never trained.

score_sde's configurations (``ve/cifar10_ncsnpp_deep_continuous``, ``vp/cifar10_ddpmpp_deep_continuous``):
``nf = 128``, ``ch_mult = (1, 2, 2, 2)``, ``num_res_blocks = 8``, attention at 16x16, BigGAN residual
blocks that resample, ``skip_rescale`` (sums divided by sqrt 2), GroupNorm, swish, dropout 0.1.
NCSN++ deep adds FIR up/down-sampling (kernel ``[1, 3, 3, 1]``), a residual input pyramid
(``progressive_input = "residual"``), a Gaussian-Fourier embedding of ``log sigma`` (scale 16) and
output division by ``sigma``; DDPM++ deep has no FIR, no pyramid and the sinusoidal embedding of
``999 t``.  Counting score_sde's own module with these configurations gives 107,587,075 and
106,632,579 parameters (:data:`PAPER_PARAMETERS`).

How the diffusers configuration maps onto that (a maintained implementation instead of our own):

* **NCSN++ deep** = ``SkipDownBlock2D`` / ``AttnSkipDownBlock2D`` / ``SkipUpBlock2D`` /
  ``AttnSkipUpBlock2D`` (diffusers' port of score_sde's NCSN++: FIR-resampling BigGAN blocks with a
  1x1 shortcut, residual sums scaled by 1/sqrt 2, one attention per up level at 16x16, attention
  after every down block at 16x16), Fourier embedding, ``center_input_sample`` (score_sde's
  ``2 x - 1`` for VE data in [0, 1]) and output division by ``sigma``.  Differences: the input
  pyramid is a 1x1 convolution of the FIR-downsampled 3-channel image, where score_sde carries a
  pyramid of ``in_ch`` channels through 3x3 FIR convolutions (0.87 M parameters, all at 16x16 and
  below); the up path adds a 3-channel output pyramid (``progressive = "output_skip"``), where
  score_sde's deep config has none.  106.7 M parameters (-0.8 %), 36.5 against 37.2 GFLOP
  per image (-1.8 %, ``torch.utils.flop_counter`` on both modules).
* **DDPM++ deep** = ``ResnetDownsampleBlock2D`` / ``AttnDownBlock2D`` / ``ResnetUpsampleBlock2D`` /
  ``AttnUpBlock2D`` with resampling residual blocks (``downsample_type = upsample_type = "resnet"``,
  average-pool / nearest resampling as score_sde's ``fir = False``) and the positional embedding.
  diffusers' ``AttnUpBlock2D`` attends after each of its 9 residual blocks; score_sde attends once
  per up level, so the first 8 attention layers of that block are replaced by identities (the only
  edit of a diffusers module).  Differences: the resampling blocks have no 1x1 shortcut (score_sde's
  BigGAN blocks do).  106.3 M parameters (-0.3 %), 36.3 against 37.1 GFLOP per image (-2.2 %).

Both cost within about 2 % of score_sde's networks in FLOPs, with the same layer types at the same
resolutions, so their forward time stands for the paper's networks on the same machine.  Timed side
by side with score_sde's modules on a 2-core CPU (one thread, interleaved rounds, score_sde's
CPU FIR path): batch 1, 2.54 against 2.55 s (NCSN++) and 2.85 against 2.60 s (DDPM++), medians of 4;
batch 8, 15.2 against 16.2 s and 15.0 against 15.8 s, means of 2 (differences within the timing noise
of a shared machine).
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DModel
from torch import nn

from kl_repro.core.config import ConfigError
from kl_repro.nets import count_parameters

__all__ = ["PAPER_PARAMETERS", "DeepScoreNet", "ncsnpp_deep", "ddpmpp_deep", "count_parameters"]

PAPER_PARAMETERS = {
    # score_sde_pytorch's models/ncsnpp.py NCSNpp built with the two CIFAR-10 deep continuous configs
    "ncsnpp_deep": 107_587_075,
    "ddpmpp_deep": 106_632_579,
}


class DeepScoreNet(nn.Module):
    """A diffusers ``UNet2DModel`` with score_sde's continuous-time interface ``net(x, t)``.

    * ``kind = "ve"`` (NCSN++): ``t`` is the noise level ``sigma`` ``(B,)`` (the Fourier embedding
      takes ``log sigma``); returns the score ``s(x, sigma)`` (the output is divided by ``sigma``, as
      score_sde's ``scale_by_sigma``).  Input ``x`` ``(B, C, H, W)`` in [0, 1].
    * ``kind = "vp"`` (DDPM++): ``t`` in [0, 1] ``(B,)``, embedded as ``999 t`` (score_sde's continuous
      VP labels); returns the predicted noise ``eps(x, t)``, so ``s = -eps / sigma_t``.  ``x`` in [-1, 1].
    """

    def __init__(self, unet: UNet2DModel, kind: str, name: str):
        super().__init__()
        if kind not in ("ve", "vp"):
            raise ConfigError(f"kind must be 've' or 'vp', got {kind!r}")
        self.unet, self.kind, self.name = unet, kind, name

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return self.unet(x, t if self.kind == "ve" else 999.0 * t, return_dict=False)[0]


def _check(image_size: int, channels: int, width: int, num_res_blocks: int) -> None:
    if image_size < 8 or image_size % 8:
        raise ConfigError(f"image_size must be a multiple of 8 (three 2x downsamplings), got {image_size}")
    if channels < 1 or num_res_blocks < 1:
        raise ConfigError(f"need channels >= 1 and num_res_blocks >= 1, got {channels}, {num_res_blocks}")
    if width < 32 or width % 32:
        raise ConfigError(f"width must be a multiple of 32 (GroupNorm with 32 groups), got {width}")


def _common(image_size: int, channels: int, width: int, num_res_blocks: int) -> dict:
    _check(image_size, channels, width, num_res_blocks)
    return dict(sample_size=image_size, in_channels=channels, out_channels=channels,
                block_out_channels=(width, 2 * width, 2 * width, 2 * width),  # ch_mult (1, 2, 2, 2)
                layers_per_block=num_res_blocks, mid_block_scale_factor=math.sqrt(2.0),  # skip_rescale
                norm_eps=1e-6, attention_head_dim=None, dropout=0.1)  # one attention head, as score_sde


def ncsnpp_deep(image_size: int = 32, channels: int = 3, width: int = 128, num_res_blocks: int = 8) -> DeepScoreNet:
    """NCSN++ deep continuous (VE) at ``image_size`` (defaults: CIFAR-10, about 106.7 M parameters).

    Random weights, in ``eval`` mode.  Attention at ``image_size / 2`` (16x16 for CIFAR-10).
    ``width``/``num_res_blocks`` below 128/8 give a small network of the same shape (tests).  diffusers'
    pyramid blocks are written for RGB, so ``channels`` must be 3.
    """
    if channels != 3:
        raise ConfigError(f"NCSN++ (diffusers' Skip blocks) needs channels = 3, got {channels}")
    unet = UNet2DModel(
        **_common(image_size, channels, width, num_res_blocks),
        time_embedding_type="fourier", center_input_sample=True,  # log-sigma Fourier features; 2x - 1 for [0, 1] data
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
    )
    return DeepScoreNet(unet, "ve", "NCSN++ deep (VE)").eval()


def ddpmpp_deep(image_size: int = 32, channels: int = 3, width: int = 128, num_res_blocks: int = 8) -> DeepScoreNet:
    """DDPM++ deep continuous (VP) at ``image_size`` (defaults: CIFAR-10, about 106.3 M parameters).

    Random weights, in ``eval`` mode; one attention layer per up level at 16x16 as score_sde (module docstring).
    """
    unet = UNet2DModel(
        **_common(image_size, channels, width, num_res_blocks),
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        downsample_type="resnet", upsample_type="resnet",
    )
    attentions = unet.up_blocks[2].attentions
    for i in range(len(attentions) - 1):
        attentions[i] = nn.Identity()
    return DeepScoreNet(unet, "vp", "DDPM++ deep (VP)").eval()
