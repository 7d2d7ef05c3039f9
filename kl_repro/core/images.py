"""The library's one image convention: uint8 ``[0, 255]`` on disk and in metrics, float ``[-1, 1]`` in models.

Both papers train on pixels scaled to ``[-1, 1]`` (paper A Sec. 6.1, Methods A.1; paper B's VP
models) and measure FID on uint8 images (Methods E).  Every conversion between the two goes through
:func:`to_float` and :func:`to_uint8`, so loading, the FD_clf classifier, the metrics' uint8 boundary
and image grids round the same way.  Both keep the layout (``(N, C, H, W)`` or any other) and device.
"""

from __future__ import annotations

import torch

__all__ = ["to_float", "to_uint8"]


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` to float32 ``[-1, 1]``: ``x / 127.5 - 1`` (0 -> -1, 255 -> 1), any shape."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(images_float: torch.Tensor) -> torch.Tensor:
    """Float ``[-1, 1]`` to uint8 ``[0, 255]``: ``round((clamp(x, -1, 1) + 1) * 127.5)``, any shape.

    Computed in float32 (float64 input is cast first); ``round`` is ``torch.round``, half to even, so
    -0.5 maps to 64 (63.75 rounded) and 0 to 128 (127.5 rounded to even).  Values outside ``[-1, 1]``
    saturate at 0 and 255.  uint8 input is returned unchanged.
    """
    if images_float.dtype == torch.uint8:
        return images_float
    return ((images_float.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
