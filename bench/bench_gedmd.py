"""gEDMD set-up time against M in 784 dimensions, with the iterative solver, and its growth exponent.

For M = 1000 ... 10,000 reference points in 784-d (MNIST 28x28 when ``$KL_REPRO_DATA`` has it, else
uniform noise), the frozen VE reverse drift of the points' ideal score at ``sigma(t*) = 0.5`` on
perturbed copies (as in ``bench_paper_b``), then

* ``t_gram``: ``G0`` and ``K`` in closed form (one SYRK and one GEMM, ``3 M^2 d`` flops);
* ``t_eig``: the 6 slowest eigenpairs (``n_keep = 6``, the sampler's ``L + 1``) by
  ``gedmd.solve(solver="iterative")``: Cholesky of ``G0`` (``M^3 / 3`` flops), Krylov-Schur on
  ``R^-T K R^-1`` (``4 M^2`` flops a product), and where the leading eigenvalues are clustered one LU
  (``2 M^3 / 3``) for shift-and-invert.

Wall and CPU seconds (``time.process_time``, all threads) are both printed: on a machine shared with
other jobs the wall time measures the scheduler as much as the code, and the CPU time is what an idle
machine would need (at most that, divided by the threads that ran in parallel).  The load average is
printed beside each row.  At the smallest M the dense solver runs too, for the agreement of the
leading eigenvalues and the speed-up.  The M = 5000 row runs twice: on these virtual machines memory a
process touches for the first time costs up to about 1 s per 200 MB (the host backs it page by page),
so the first call measures that as well as the code, and the repeat measures the code.  The fitted
exponent of ``t ~ M^p`` is over M >= 1000; rows above M = 2000 are skipped once the benchmark has used
its time budget.

    .venv/bin/python -m bench.bench_gedmd [--quick]    # or: .venv/bin/python -m bench --only gedmd
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

from bench.bench_paper_b import _points_784

BUDGET_S = 240.0  # the share of `make bench` this benchmark may use
MS = (1000, 2000, 3000, 5000, 7000, 10000)
MS_QUICK = (500, 1000)
D = 784


def _points(M: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """M points in 784-d: MNIST when present, else uniform noise (the same points as bench_paper_b)."""
    return _points_784(M, seed)


def _problem(M: int, seed: int = 0):
    """``(X, B, a, zeta, source)``: perturbed points, the VE reverse drift of their ideal score, ``a = g^2``, the bandwidth."""
    from kl_repro.paper_b.fp_operator import drift_at
    from kl_repro.paper_b.scores import IdealScore
    from kl_repro.paper_b.sde import VESDE

    X, source = _points(M, seed)
    sde = VESDE()
    t_star = float(np.log(0.5 / sde.sigma_min) / np.log(sde.sigma_max / sde.sigma_min))
    Xt = torch.from_numpy(X)
    Xp = Xt + 0.5 * torch.randn(Xt.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    B, a = drift_at(IdealScore(Xt, sde), sde, Xp, t_star)
    return Xp.numpy(), B, a, 22.0 * 10.0 / 18.6, source  # the paper's zeta scaled to MNIST's median distance (about 10)


def _clock():
    return time.perf_counter(), time.process_time()


def setup_row(M: int, dense: bool = False) -> dict:
    """One row: wall/CPU seconds of the Gram matrices and of the iterative eigensolve, flops, load; the dense solve if asked."""
    from kl_repro.paper_b import gedmd

    X, B, a, zeta, source = _problem(M)
    load = round(os.getloadavg()[0], 1)
    w0, c0 = _clock()
    G0, K = gedmd.gram_generator(X, B, a, zeta)
    w1, c1 = _clock()
    lam, V, U, pairing, info = gedmd.solve(G0, K, n_keep=6, solver="iterative")
    w2, c2 = _clock()
    flops = 3.0 * M * M * D + M**3 / 3 + (2 * M**3 / 3 if "sigma" in info else 0.0) + 4.0 * M * M * info.get("products", 0)
    row = {"M": M, "load_1min": load, "t_gram_s": w1 - w0, "t_eig_s": w2 - w1, "t_setup_s": w2 - w0,
           "cpu_gram_s": c1 - c0, "cpu_eig_s": c2 - c1, "cpu_setup_s": c2 - c0, "gflop": flops / 1e9,
           "solver": info["solver"], "stage1_converged": info.get("stage1_converged"), "shift_invert": "sigma" in info,
           "products": info.get("products"), "factor": info.get("factor"), "lam0": float(lam[0].real), "lam5": float(lam[5].real), "data": source}
    if dense:
        w3, _ = _clock()
        lam_d, *_ = gedmd.solve(G0, K, n_keep=6, solver="dense")
        row["t_dense_eig_s"] = _clock()[0] - w3
        row["max_abs_diff_vs_dense"] = float(max(np.abs(lam_d - z).min() for z in lam))
        row["rel_diff_vs_dense"] = row["max_abs_diff_vs_dense"] / float(np.abs(lam).max())
    return row


def _exponent(rows: list[dict], key: str) -> float:
    big = [r for r in rows if r["M"] >= 1000 and r.get(key)]
    if len(big) < 2:
        return float("nan")
    return float(np.polyfit(np.log([r["M"] for r in big]), np.log([r[key] for r in big]), 1)[0])


def run(quick: bool = False) -> dict:
    """Set-up time against M (1000 ... 10,000; quick: 500, 1000), the fitted exponents, the 5 s target at M = 5000."""
    t_start = time.perf_counter()
    out = {"load_average_start": os.getloadavg(), "threads": torch.get_num_threads(), "budget_s": BUDGET_S}
    rows, skipped = [], []
    for i, M in enumerate(MS_QUICK if quick else MS):
        if M > 2000 and time.perf_counter() - t_start > BUDGET_S:
            skipped.append(M)
            continue
        rows.append(setup_row(M, dense=(i == 0)))
    at5000 = next((r for r in rows if r["M"] == 5000), None)
    again = setup_row(5000) if at5000 else None  # the same set-up once more, on memory the process has touched
    out.update({
        "growth": [{k: v for k, v in r.items() if k != "data"} for r in rows],
        "data": rows[0]["data"],
        "skipped_for_time": skipped,
        "exponent_wall": _exponent(rows, "t_setup_s"),
        "exponent_cpu": _exponent(rows, "cpu_setup_s"),
        "M5000_setup_wall_s": at5000["t_setup_s"] if at5000 else None,
        "M5000_setup_cpu_s": at5000["cpu_setup_s"] if at5000 else None,
        "M5000_under_5s_wall": (at5000["t_setup_s"] <= 5.0) if at5000 else None,
        "M5000_repeat_setup_wall_s": again["t_setup_s"] if again else None,
        "M5000_repeat_under_5s_wall": (again["t_setup_s"] <= 5.0) if again else None,
        "load_average_end": os.getloadavg(),
    })
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
