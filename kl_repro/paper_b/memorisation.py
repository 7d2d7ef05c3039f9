"""Memorisation and diversity of samples: nearest training images, copies, distinct neighbours.

A check this project adds (paper B reports FID only): with a memorising score model every sampler
can return training images, so each result states how close its samples are to the training set
(Methods B.4 and E).  Inputs in one scale, ``(n, ...)``, flattened inside.
"""

from __future__ import annotations

import torch

from kl_repro.paper_b.kernels import sqdist

__all__ = ["nearest_neighbours", "memorisation_report"]


def nearest_neighbours(Q: torch.Tensor, bank: torch.Tensor, k: int = 2, exclude_self: bool = False, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean ``k`` nearest neighbours of rows of ``Q`` ``(n, d)`` in ``bank`` ``(m, d)``: ``(dist (n, k), idx (n, k))``.

    ``exclude_self``: ``Q`` is ``bank`` and each point's own entry is skipped (training NN distances).
    """
    Q, bank = torch.as_tensor(Q), torch.as_tensor(bank)
    Q, bank = Q.reshape(Q.shape[0], -1).double(), bank.reshape(bank.shape[0], -1).double()
    dists, idxs = [], []
    for s in range(0, Q.shape[0], chunk):
        D = sqdist(Q[s : s + chunk], bank)
        if exclude_self:
            r = torch.arange(s, min(s + chunk, Q.shape[0]))
            D[r - s, r] = float("inf")
        d, i = torch.topk(D, k, dim=1, largest=False)
        dists.append(d.sqrt())
        idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


def _per_group(samples: torch.Tensor, group_refs: list[torch.Tensor]) -> dict:
    """Distinct nearest references per group and the median distance to them (samples in group order)."""
    per = samples.shape[0] // len(group_refs)
    distinct, dref = [], []
    for k, R in enumerate(group_refs):
        dd, ii = nearest_neighbours(samples[k * per : (k + 1) * per], R, k=1)
        distinct.append(int(torch.unique(ii[:, 0]).numel()))
        dref.append(dd[:, 0])
    return {"distinct_refs_per_group": distinct, "d_ref_median": float(torch.cat(dref).median())}


def memorisation_report(samples: torch.Tensor, train: torch.Tensor, group_refs: list[torch.Tensor] | None = None, copy_ratio: float = 1 / 3) -> dict:
    """Memorisation and diversity of samples.

    * ``d_train``: distance of each sample to its nearest training image, against the training set's own
      nearest-neighbour distances (``train_nn_median``); ``ratio_to_train_nn`` = median ratio.
    * ``frac_copies``: share with ``d1 / d2 < copy_ratio`` (nearest vs second-nearest training image, the
      ratio test of Yoon et al. 2023 / Carlini et al. 2023).
    * ``distinct_nn``: number of distinct nearest training images among the samples, and per group the
      number of distinct nearest references (``group_refs``: each group's references, in sample order).
    """
    d, i = nearest_neighbours(samples, train, k=2)
    dtr, _ = nearest_neighbours(train, train, k=1, exclude_self=True)
    ratio = d[:, 0] / d[:, 1].clamp_min(1e-30)
    out = {
        "d_train_median": float(d[:, 0].median()),
        "train_nn_median": float(dtr[:, 0].median()),
        "ratio_to_train_nn": float(d[:, 0].median() / dtr[:, 0].median().clamp_min(1e-30)),
        "frac_copies": float((ratio < copy_ratio).double().mean()),
        "distinct_nn": int(torch.unique(i[:, 0]).numel()),
        "n_samples": int(samples.shape[0]),
    }
    if group_refs:
        out.update(_per_group(samples, group_refs))
    return out
