"""Do the loss gradients of different noise levels point the same way?  A diagnostic of ours, not the paper's.

Paper A motivates the KL loss by smoother paths (Sec. 3.3; Methods A.8) and cites the "conflicting
directions" of gradients across noise levels (Hang et al.); it never measures them.  Here
:func:`gradient_conflict` takes the cosine similarity of the loss gradients at single noise levels,
:func:`gradient_conflict_study` trains a small baseline and a small KL-8d model on digits and measures
both, and :func:`gradient_conflict_verdict` words the comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from kl_repro.core.config import require
from kl_repro.core.profiles import Profile
from kl_repro.data import DataConfig, generator, load_dataset
from kl_repro.paper_a.losses import DiffusionConfig, build_loss
from kl_repro.paper_a.training.loop import train_from_params

__all__ = ["gradient_conflict", "gradient_conflict_study", "gradient_conflict_verdict"]


def gradient_conflict(net: torch.nn.Module, diff_cfg: DiffusionConfig, x0: torch.Tensor, seed: int = 0, n_times: int = 20,
                      share_noise: bool | None = None) -> dict:
    """Cosine similarity of loss gradients across noise levels (Hang et al.'s "conflicting directions").

    For ``n_times`` levels ``t_i`` spread over the training grid, the gradient of the loss on the same
    images ``x0`` (``(n, C, H, W)`` in [-1, 1]) is taken at the single level ``t_i``; returns the
    ``(n_times, n_times)`` cosine matrix, the levels, and the mean off-diagonal and neighbour cosines.
    Baseline (7): fresh noise per level, as in training.  KL (19): the coefficients ``Z`` drawn once
    per image and shared by every level, as along a KL path.  ``share_noise`` overrides that choice (a
    baseline with one ``eps`` shared by every level separates the effect of the KL noise from that of
    reusing the noise).
    """
    loss_fn = build_loss(diff_cfg)
    T = diff_cfg.T
    idx = np.unique((T * np.arange(1, n_times + 1) / n_times).round().astype(int) - 1)  # t_i = i / n_times
    params = [q for q in net.parameters() if q.requires_grad]
    shared = diff_cfg.is_kl if share_noise is None else share_noise
    grads = []
    for j, i in enumerate(idx):
        # KL: the same generator for every level, so the coefficients Z are shared along the path
        g = generator("gradient-conflict", seed) if shared else generator("gradient-conflict", seed, j)
        net.zero_grad(set_to_none=True)
        loss, _ = loss_fn(net, x0, g, t_index=int(i))
        gr = torch.autograd.grad(loss, params)
        grads.append(torch.cat([x.reshape(-1) for x in gr]).double())
    G = torch.stack(grads)
    G = G / G.norm(dim=1, keepdim=True)
    C = (G @ G.T).numpy()
    off = C[~np.eye(len(idx), dtype=bool)]
    neigh = np.diag(C, 1)
    return {"t": (idx + 1) / T, "cosine": C, "mean_offdiag": float(off.mean()), "mean_neighbour": float(neigh.mean()),
            "model": diff_cfg.model, "shared_noise": bool(shared)}


def gradient_conflict_study(profile: Profile, steps: int, seed: int = 0, n_images: int = 64) -> dict:
    """Train a small baseline and a small KL-8d model on digits for ``steps`` steps, then measure both.

    Returns ``{"baseline": ..., "baseline_shared": ..., "kl": ...}`` from :func:`gradient_conflict` on the
    same ``n_images`` training digits, at the 20 levels ``t_i = i/20`` (the baseline at its matching
    indices ``50 i - 1``).  The two runs are ordinary runs of the profile (reused when they exist).
    """
    require(steps >= 1, f"the gradient-conflict runs need steps >= 1, got {steps}")
    base = dict(dataset="digits", dim=16, dim_mults=(1, 2), attn_heads=1, attn_dim_head=16, threads=1, lr=1e-3,
                B=16, steps=steps, seed=seed, checkpoint_every=steps, sample_every=0, eval_every=steps,
                n_grid_samples=0, label="gradient-conflict")
    data = load_dataset(DataConfig(name="digits", flip=False))
    x0 = torch.stack([data[i] for i in range(n_images)])
    out = {}
    for model, extra in (("baseline", {}), ("kl", {"d": 8})):
        run = train_from_params(profile, {"model": model, **extra, **base}, progress=False)
        net = run.load_model(ema=True)
        out[model] = gradient_conflict(net, run.config.diffusion, x0, seed)
        out[model]["run"] = run.name
        if model == "baseline":
            out["baseline_shared"] = gradient_conflict(net, run.config.diffusion, x0, seed, share_noise=True)
            out["baseline_shared"]["run"] = run.name
    out["steps"], out["n_images"], out["seed"] = steps, n_images, seed
    return out


def gradient_conflict_verdict(base: float, base_shared: float, kl_: float) -> str:
    """A sentence on the mean off-diagonal gradient cosines of the three settings of :func:`gradient_conflict_study`."""
    text = (f"At this scale the KL loss's gradients are {'more' if kl_ > base else 'less'} aligned across noise levels "
            f"than the baseline's (mean cosine {kl_:.2f} against {base:.2f}).")
    if abs(kl_ - base) > 1e-9:
        share = (base_shared - base) / (kl_ - base)
        text += (f" Reusing one noise for every level moves the baseline to {base_shared:.2f}, "
                 f"{100 * share:.0f} % of the way to KL.")
    return text + " One seed and one small network: a diagnostic, not a proof."
