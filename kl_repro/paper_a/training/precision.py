"""Mixed precision of paper A's training loop: fp16 AMP (autocast and loss scaling) driven here, on CUDA and CPU alike.

Paper A trains in fp16 AMP on CUDA (Sec. 6.2, lucidrains' ``Trainer``).  ``accelerate`` runs fp16 on
accelerators only (on CPU it silently trains in fp32), so fp16 is driven here with ``torch.autocast``
and ``torch.amp.GradScaler``, the very calls ``accelerate`` makes on CUDA: the network's forward pass
runs under autocast and returns fp32, the loss is scaled before ``backward``, the gradients are
unscaled before clipping, and a step whose gradients hold an inf or NaN is skipped (weights and
optimiser state untouched) while the scale is halved.  CPU and CUDA differ in ONE named switch,
:attr:`Fp16Amp.device_type`, passed to both; there is no second code path, so the tests on CPU run
what a GPU user runs.  bf16 and fp32 (``no``) go through ``accelerate`` as before (:class:`NoAmp`).

A non-finite *loss* still stops the run (``TrainingDiverged``): the loss is computed in fp32 from the
network's fp32 outputs, so the loss scale cannot have caused it and skipping would not cure it.
"""

from __future__ import annotations

from typing import Any

import torch

from kl_repro.core.config import ConfigError

__all__ = ["resolve_mixed_precision", "accelerate_precision", "Fp16Amp", "NoAmp", "amp_for"]

AMP_DEVICES = ("cuda", "cpu")  # device types whose fp16 autocast and GradScaler this loop drives


def resolve_mixed_precision(setting: str, device_type: str) -> str:
    """``auto`` -> ``fp16`` on CUDA (paper: AMP fp16), ``no`` elsewhere; ``fp16`` runs on CUDA and on CPU."""
    if setting == "auto":
        return "fp16" if device_type == "cuda" else "no"
    if setting == "fp16" and device_type not in AMP_DEVICES:
        raise ConfigError(f"mixed_precision='fp16' runs on {' or '.join(AMP_DEVICES)}, not on {device_type!r}")
    return setting


def accelerate_precision(mp: str) -> str:
    """What ``accelerate`` is told: ``no`` for fp16 (driven by :class:`Fp16Amp`), else the resolved setting."""
    return "no" if mp == "fp16" else mp


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser inside ``accelerate``'s wrapper (the scaler keys its state on this object)."""
    return getattr(optimizer, "optimizer", optimizer)


def _to_fp32(out: Any) -> Any:
    """Half-precision tensors of a forward pass's output (a tensor or a tuple/list of them) as float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_fp32(o) for o in out)
    return out


class NoAmp:
    """fp32 or bf16 (``accelerate`` handles bf16 autocast): no loss scaling, every step taken."""

    enabled = False

    def wrap_forward(self, model: torch.nn.Module) -> None:
        pass

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()``; returns False (never skipped)."""
        optimizer.step()
        return False

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        pass  # e.g. an ``auto`` run started in fp16 on CUDA and resumed on CPU: its scaler state is not used


class Fp16Amp:
    """fp16 autocast of the forward pass and a ``torch.amp.GradScaler`` (initial scale 2**16, halved on overflow)."""

    enabled = True
    init_scale = 2.0**16  # torch's (and accelerate's) default; the first steps of a run may overflow and be skipped

    def __init__(self, device_type: str):
        self.device_type = device_type  # THE switch between CUDA and CPU: autocast's and the scaler's device type
        self.scaler = torch.amp.GradScaler(device_type, init_scale=self.init_scale)

    def wrap_forward(self, model: torch.nn.Module) -> None:
        """Run ``model``'s forward under fp16 autocast with fp32 outputs (in place; state-dict keys unchanged)."""
        forward, device_type = model.forward, self.device_type

        def autocast_forward(*args, **kwargs):
            with torch.autocast(device_type, dtype=torch.float16):
                out = forward(*args, **kwargs)
            return _to_fp32(out)

        model.forward = autocast_forward

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss times the current scale (call ``backward`` on this)."""
        return self.scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale (before clipping) and note whether any is inf or NaN."""
        self.scaler.unscale_(_inner(optimizer))

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The optimiser step unless a gradient overflowed, then the scale update; returns True if the step was skipped."""
        before = self.scaler.get_scale()
        self.scaler.step(_inner(optimizer))
        self.scaler.update()
        return self.scaler.get_scale() < before

    @property
    def loss_scale(self) -> float:
        return float(self.scaler.get_scale())

    def state_dict(self) -> dict[str, Any]:
        """Scale, growth/backoff factors, growth interval and growth tracker (plain numbers: ``weights_only`` loads them)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.scaler.load_state_dict(state)


def amp_for(mp: str, device_type: str) -> Fp16Amp | NoAmp:
    """:class:`Fp16Amp` on ``device_type`` for ``mp == 'fp16'``, else :class:`NoAmp`."""
    return Fp16Amp(device_type) if mp == "fp16" else NoAmp()
