"""The stored results of a profile's paper-A run matrix, and the curve arithmetic every table and figure shares.

:func:`load_results` reads the matrix and its planned runs (:mod:`kl_repro.paper_a.matrix`); a
:class:`Results` then hands out, per run id, the proxy-score curve over optimisation steps (all seeds),
the final evaluations, the training log rows and the fast paths the run trained with.  Artefacts the
profile cannot make are stored with the reason by :func:`absent`.  Tables are in
:mod:`kl_repro.paper_a.tables`, figures in :mod:`kl_repro.paper_a.figures`, verdict sentences in
:mod:`kl_repro.paper_a.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kl_repro.core import store
from kl_repro.core.registry import paper_values
from kl_repro.core.profiles import Profile, as_profile
from kl_repro.core.verdict import not_tested
from kl_repro.paper_a import matrix
from kl_repro.paper_a.training.run import Run

__all__ = ["PANELS", "Results", "load_results", "absent", "by_step", "best_per_seed", "final_value", "final_by_seed", "final_scores",
           "panel_runs", "speedup_target"]

# Fig. 2's panels: the paper's data set behind each, and the artefact id our stand-in runs make.
PANELS = {"a": ("MNIST-32", "A.fig2a"), "b": ("CelebAHQ-64", "A.fig2b"), "c": ("CIFAR10-32", "A.fig2c")}

FAST_PATH_SWITCHES = ("channels_last", "compile", "tf32", "fused_adamw")


@dataclass
class Results:
    """The stored results of a profile's paper-A matrix; ``curves`` caches run id -> eval rows (all seeds).

    ``profile`` is a :class:`~kl_repro.core.profiles.Profile` (a name is resolved on construction);
    :attr:`name` is its name, which artefacts and captions carry.
    """

    profile: Profile
    matrix: matrix.Matrix
    plan: list
    curves: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.profile = as_profile(self.profile)

    @property
    def name(self) -> str:
        """The profile's name."""
        return self.profile.name

    def runs(self, artefact: str) -> list:
        """The run specs of the matrix that feed ``artefact``."""
        return self.matrix.runs_for(artefact)

    def planned(self, run_id: str) -> list:
        """The planned (run, seed) pairs of ``run_id``."""
        return [p for p in self.plan if p.spec.id == run_id]

    def metric(self, run_id: str) -> str:
        """The sample-quality metric of the run's data set (``FD_clf``, ``FID`` or ``energy``)."""
        return self.matrix.evals[self.matrix.spec(run_id).data].metric

    def label(self, run_id: str) -> str:
        """The paper-style label of a run, e.g. ``KL-8d-b16``."""
        return self.matrix.spec(run_id).label

    def curve(self, run_id: str) -> list[dict]:
        """Eval rows ``{seed, step, metric, value, opt_time_s}`` of the run, all seeds (read once)."""
        if run_id not in self.curves:
            self.curves[run_id] = matrix.curves(self.profile, run_id)
        return self.curves[run_id]

    def final(self, run_id: str) -> list[dict]:
        """Final-evaluation results, one per finished seed."""
        out = []
        for p in self.planned(run_id):
            f = p.run_dir / "final.json"
            if f.exists():
                out.append({"seed": p.seed, **store.read_json(f)["result"]})
        return out

    def evals_per_step(self, run_id: str) -> int:
        """Rows through the network per optimisation step: ``B d`` for KL (one pass of ``B * d`` rows, eq. (19)),
        ``B d'`` for the partial loss (20), ``B`` for the baseline (7) and KL* (25) (the losses' ``n_eval``)."""
        cfg = self.matrix.spec(run_id)
        planned = self.planned(run_id)
        diff = planned[0].config.diffusion if planned else None
        B = planned[0].config.train.B if planned else int(cfg.params.get("B", 16))
        if diff is None or diff.model in ("baseline", "kl_star"):
            return B
        return B * (diff.d_prime if diff.model == "kl_partial" else diff.d)

    def train_rows(self, run_id: str) -> list[list[dict]]:
        """The training log rows of each started seed of the run (step time in s, peak memory in MB, ...)."""
        return [Run.open(p.run_dir).metrics("train") for p in self.planned(run_id) if (p.run_dir / "config.json").exists()]

    def fast_paths(self, run_id: str) -> str | None:
        """The fast paths the run trained with (``run.json``): the ones switched on, precision and threads."""
        for p in self.planned(run_id):
            fp = Run.open(p.run_dir).info().get("fast_paths") if (p.run_dir / "run.json").exists() else None
            if fp:
                on = [name for name in FAST_PATH_SWITCHES if fp.get(name)]
                prec = fp.get("mixed_precision", "no")
                return ", ".join([*on, "fp32" if prec == "no" else prec, f"{fp.get('threads', '?')} thread(s)"])
        return None

    def eval_note(self, run_id: str) -> str:
        """How the run's curve was scored: metric, sample counts, sampler and seeds (for captions)."""
        run_spec = self.matrix.spec(run_id)
        ev = self.matrix.evals.get(run_spec.data)
        if ev is None:
            return ""
        return (f"{ev.metric}, proxy {ev.proxy_samples} / final {ev.final_samples} samples, DDIM eta=1 "
                f"(S=20 baseline, every grid point for KL), seeds {list(run_spec.seeds)}")


def load_results(profile: Profile | str) -> Results:
    """The matrix, the plan and (lazily) the curves of ``profile`` (a Profile or its name)."""
    profile = as_profile(profile)
    return Results(profile, matrix.load_matrix(profile), list(matrix.planned_runs(profile)))


def absent(res: Results, artefact: str) -> str | None:
    """If the profile cannot make ``artefact``, store that with the reason and return the reason (else None)."""
    reason = res.matrix.absent.get(artefact)
    if reason is None and not res.runs(artefact):
        reason = "no run of this profile's matrix makes it"
    if reason is not None:
        store.save_artefact(res.name, artefact, {"ours": None, "paper": {"source": "see the paper"},
                                                 "verdict": not_tested(f"profile '{res.name}' cannot make it: {reason}"),
                                                 "ours_summary": "absent at this profile"})
    return reason


def by_step(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps ``(S,)``, mean over seeds ``(S,)`` and (min, max) spread ``(S, 2)`` of eval rows."""
    steps = sorted({r["step"] for r in rows})
    vals = [[r["value"] for r in rows if r["step"] == s] for s in steps]
    mean = np.array([np.mean(v) for v in vals])
    spread = np.array([[np.min(v), np.max(v)] for v in vals])
    return np.array(steps), mean, spread


def best_per_seed(rows: list[dict]) -> dict[int, dict]:
    """Best (minimum) proxy score per seed and its step: ``{seed: {"value", "step"}}``."""
    out: dict[int, dict] = {}
    for r in rows:
        s = r["seed"]
        if s not in out or r["value"] < out[s]["value"]:
            out[s] = {"value": r["value"], "step": r["step"]}
    return out


def final_value(res: Results, run_id: str) -> float | None:
    """Mean over seeds of the run's final score (None when no seed has finished)."""
    f = res.final(run_id)
    return float(np.mean([x["value"] for x in f])) if f else None


def panel_runs(res: Results, panel: str) -> list[str]:
    """Run ids of Fig. 2's panel ``a``, ``b`` or ``c``."""
    return [r.id for r in res.runs(PANELS[panel][1])]


def final_by_seed(res: Results, run_id: str) -> dict[int, float]:
    """One final score per finished seed, ``{seed: score}`` by seed; before any seed has a final evaluation,
    each seed's last proxy score (never a mix: a Fréchet distance of fewer samples is biased upwards)."""
    finals = {int(f["seed"]): f["value"] for f in res.final(run_id)}
    if finals:
        return dict(sorted(finals.items()))
    last: dict[int, float] = {}
    for r in sorted(res.curve(run_id), key=lambda r: r["step"]):
        last[int(r["seed"])] = r["value"]
    return dict(sorted(last.items()))


def final_scores(res: Results, run_id: str) -> list[float]:
    """:func:`final_by_seed`'s scores, in seed order."""
    return list(final_by_seed(res, run_id).values())


def speedup_target(data: str) -> float:
    """The paper's speed-up on ``data``: "about 2x" (MNIST-32, CelebAHQ-64), "more than 3x" (CIFAR10-32, CelebAHQ-128;
    Paper A, abstract and App. D); the reduced profiles' stand-ins for MNIST take 2."""
    claim = paper_values("A")["claims"]["speedup"]
    return float(claim.get("by_data", {}).get(data, claim["value"]))
