"""Chapter 6 (``notebooks/06_operator_sampler.ipynb``): paper B's Fokker-Planck sampler, Tables 1-3, Figs. 1-2, E1-E4.

Paper B, Sec. 3-4 and Algorithm 1; Methods B.1-B.5 and E.  Each function makes one section: it runs the
experiment (:mod:`kl_repro.paper_b.toy_experiments`, :mod:`kl_repro.paper_b.image_experiments`), draws
the figure, stores the artefact (ids ``B.E1``, ``B.E2``, ``B.table1``, ``B.fig1``, ``B.E3``, ``B.table2``,
``B.table3``, ``B.fig2``, ``B.E4``) and returns an :class:`~kl_repro.paper_b.report.Artefact`, which a
notebook displays as its tables, figure and a summary with the values and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting
from kl_repro.core.config import require
from kl_repro.core.registry import paper_values
from kl_repro.paper_b import figures, image_data, image_experiments, report, tables, toy_experiments
from kl_repro.paper_b.fp_config import FPConfig, fp_preset
from kl_repro.paper_b.image_runs import FrechetSpec
from kl_repro.paper_b.report import Artefact
from kl_repro.paper_b.verdicts import metric_name

__all__ = ["OperatorSamplerConfig", "prepare", "e1", "e2", "image_setup", "table1", "extra_datasets", "fig1", "e3",
           "table2", "table3", "fig2", "e4"]


@dataclass(frozen=True)
class OperatorSamplerConfig(ChapterConfig):
    """Parameters of ``notebooks/06_operator_sampler.ipynb``: paper B's Tables 1-3, Figs. 1-2 and E1-E4."""

    # E1: OU operator validation (check T4)
    ou_M: int = 500
    ou_n_prior: int = 4000
    # E2: 2-D mixture with exact scores
    mix_M: int = 600
    mix_zeta: float = 0.5
    mix_chains: int = 500
    mix_J: int = 500
    mix_step_size: float = 0.02  # step / zeta_s^2 = 0.08 (the paper's 0.5 / 25 = 0.02 would need 4x more steps)
    mix_sigma_star: float = 1.0
    mix_sigma_metastable: float = 0.3
    # E3 and Tables 1-3: images with the ideal score of a training subset
    dataset: str = "digits"
    pool: int = 1500  # training images behind the ideal score and the references
    M: int = 1000  # paper: 2000 (digits has 1,500 training images)
    L: int = 5
    J: int = 1000
    n_groups: int = 5  # paper: 250
    n_per_group: int = 100  # paper: 200
    pc_N: int = 1000  # PC steps (PC1000)
    pc_images: int = 500
    fd: bool = True  # Frechet distance and KID of the samples (FD_clf on digits)
    fd_extractor: str | None = None  # None: the data set's default (clf for digits, Inception else)
    fd_reference_images: int | None = None  # first N training images for the reference statistics (None: all)
    M_values: tuple[int, ...] = (250, 500, 1000, 1500)  # paper: 500 ... 5000
    L_values: tuple[int, ...] = (1, 3, 5, 10, 20, 50, 100)
    sweep_groups: int = 2
    sweep_per_group: int = 50
    fig2_M: int = 1500  # paper: 5000
    fig2_images: int = 12
    ablation_images: int = 100
    extra_datasets: tuple[str, ...] = ("mnist", "cifar10")  # used where $KL_REPRO_DATA has them
    extra_pool: int = 2000
    extra_M: int = 1000
    extra_images: int = 36

    def check(self) -> None:
        super().check()
        require(self.dataset in ("digits", "mnist", "cifar10"), f"dataset must be digits, mnist or cifar10, got {self.dataset!r}")
        require(self.M <= self.pool and max(self.M_values) <= self.pool and self.fig2_M <= self.pool,
                f"every M (M={self.M}, M_values={self.M_values}, fig2_M={self.fig2_M}) must be <= pool = {self.pool}")
        require(min(self.M_values) >= max(self.L, 2), f"every M must be >= L = {self.L}")
        require(max(self.L_values) < min(self.M, self.pool), f"every L must be < M = {self.M}")
        require(self.L >= 1 and self.J >= 1 and self.mix_J >= 1, "L and J must be >= 1")
        for f in ("n_groups", "n_per_group", "pc_images", "sweep_groups", "sweep_per_group", "fig2_images", "ablation_images",
                  "mix_chains", "extra_images", "ou_n_prior", "pc_N"):
            require(getattr(self, f) >= 1, f"{f} must be >= 1, got {getattr(self, f)}")
        require(self.mix_M >= 20 and self.ou_M >= 20, "mix_M and ou_M must be >= 20")
        require(self.mix_zeta > 0 and self.mix_step_size > 0 and self.mix_sigma_star > 0 and self.mix_sigma_metastable > 0,
                "mixture bandwidth, step size and sigma* must be > 0")
        require(self.extra_M <= self.extra_pool, f"extra_M = {self.extra_M} > extra_pool = {self.extra_pool}")
        FrechetSpec(self.dataset, self.fd_extractor, self.fd_reference_images)  # validates extractor and reference size

    def fp_config(self, kind: str = "ve", preset: str = "paper", **overrides) -> FPConfig:
        """The FP sampler config of the image experiments: the paper's values, median-scaled bandwidths."""
        base = dict(sde=kind, M=self.M, L=self.L, J=self.J, n_per_group=self.n_per_group, n_groups=self.n_groups,
                    bandwidth="median", seed=self.seed)
        return fp_preset(preset, **{**base, **overrides})

    @property
    def frechet(self) -> FrechetSpec | None:
        """How samples are scored (None when ``fd`` is off)."""
        return FrechetSpec(self.dataset, self.fd_extractor, self.fd_reference_images) if self.fd else None


def prepare(cfg: OperatorSamplerConfig) -> None:
    """The book's plot theme and the chapter's thread count."""
    plotting.set_theme()
    set_threads(cfg.threads)


def _groups(n: int, per: int) -> str:
    return f"{n} group{'' if n == 1 else 's'} of {per} images"


def _meta(cfg: OperatorSamplerConfig, *names: str, **extra) -> dict:
    return {"profile": cfg.profile, **{n: getattr(cfg, n) for n in names}, "seed": cfg.seed, **extra}


def e1(cfg: OperatorSamplerConfig) -> Artefact:
    """E1 (check T4): OU density propagation with every coefficient rule against the exact density; ``B.E1``."""
    res = toy_experiments.e1_ou_propagation(cfg.ou_M, cfg.ou_n_prior, cfg.seed)
    payload = report.artefact_e1(_meta(cfg), res)
    text = f"{cfg.ou_M} OU points, {cfg.ou_n_prior} draws of p_T = N(1.5, 0.5^2), seed {cfg.seed}. {payload['verdict']}"
    return Artefact("B.E1", res, payload, figures.e1_figure(res), {"": tables.e1_table(res)}, text).save(cfg.profile)


def e2(cfg: OperatorSamplerConfig) -> Artefact:
    """E2: what the sampler targets on the 2-D mixture with exact VE scores, against PC; ``B.E2``."""
    res = toy_experiments.e2_mixture_sampling(M=cfg.mix_M, L=cfg.L, zeta=cfg.mix_zeta, step_size=cfg.mix_step_size, J=cfg.mix_J,
                                              chains=cfg.mix_chains, sigma_star=cfg.mix_sigma_star,
                                              sigma_metastable=cfg.mix_sigma_metastable, pc_N=cfg.pc_N, seed=cfg.seed)
    caption = plotting.caption(cfg.profile, chains=cfg.mix_chains, J=cfg.mix_J, M=cfg.mix_M, seed=cfg.seed)
    payload = report.artefact_e2(_meta(cfg, M=cfg.mix_M, zeta=cfg.mix_zeta), res, paper_values("b"))
    text = (f"Frozen at sigma(t*) = {cfg.mix_sigma_star:g} (metastable case: {cfg.mix_sigma_metastable:g}): {cfg.mix_chains} chains "
            f"of {cfg.mix_J} Langevin steps of size {cfg.mix_step_size:g}, M = {cfg.mix_M} references, zeta = zeta_s = {cfg.mix_zeta:g}, "
            f"L = {cfg.L}; PC with {cfg.pc_N} steps on the same exact score. {payload['verdict']}")
    return Artefact("B.E2", res, payload, figures.e2_figure(res, caption), tables.e2_tables(res), text).save(cfg.profile)


def image_setup(cfg: OperatorSamplerConfig) -> image_data.ImageSetup:
    """The first ``cfg.pool`` training images of ``cfg.dataset`` and their ideal VE/VP scores (shared by every image section)."""
    return image_data.image_setup(cfg.dataset, cfg.pool, cfg.pc_N)


def table1(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """Table 1: FP (paper and recommended presets) against PC on the same ideal score: times, FD, memorisation; ``B.table1``."""
    paper = paper_values("b")
    res = image_experiments.table1(setup, cfg.fp_config(), cfg.pc_images, cfg.frechet)
    meta = _meta(cfg, "dataset", "pool", score="ideal score of the pool", n_groups=cfg.n_groups, n_per_group=cfg.n_per_group,
                 pc_images=cfg.pc_images)
    payload = report.artefact_table1(meta, res, paper)
    floor = f" Held-out test images score {res['fd_floor']['value']:.3g} (the floor)." if res["fd_floor"] else ""
    text = (f"{cfg.dataset}: {cfg.pool} training images behind the ideal score and the references. "
            f"FP: {_groups(cfg.n_groups, cfg.n_per_group)}, M = {cfg.M}, L = {cfg.L}, J = {cfg.J}; "
            f"PC: {cfg.pc_images} images, {cfg.pc_N} steps.{floor} "
            f"IS: {res['IS']}.\n\n" + "\n\n".join(payload["verdicts"].values()))
    return Artefact("B.table1", res, payload, figures.table1_figure(res), tables.table1_frames(res, paper), text).save(cfg.profile)


def extra_datasets(cfg: OperatorSamplerConfig) -> Artefact:
    """E3's extra data sets (MNIST, CIFAR-10 subsets where ``$KL_REPRO_DATA`` has them): one group per SDE and preset."""
    res = image_experiments.extra_datasets(cfg.extra_datasets, cfg.extra_pool, cfg.fp_config(), cfg.extra_M, cfg.extra_images, cfg.pc_N)
    lines = [f"{name}: " + ("used" if d.get("available") else "absent from $KL_REPRO_DATA; skipped") for name, d in res.items()]
    return Artefact(None, res, text="; ".join(lines) if lines else "No extra data sets in this profile.")


def fig1(cfg: OperatorSamplerConfig, t1: Artefact, extra: Artefact) -> Artefact:
    """Fig. 1: sample grids from Table 1's runs and the extra data sets, with memorisation numbers; ``B.fig1``."""
    panels = [(f"{cfg.dataset} {k.replace('_', ' ')}", imgs[:100]) for k, imgs in t1.data["images"].items()]
    for name, d in extra.data.items():
        if d.get("available"):
            panels += [(f"{name} {k.replace('_', ' ')}", r["images"][:36]) for k, r in d["runs"].items()]
    fig = figures.grids_figure(panels, plotting.caption(cfg.profile, score="ideal score", seed=cfg.seed))
    payload = report.artefact_fig1(_meta(cfg, "dataset"), t1.data, extra.data, paper_values("b"))
    return Artefact("B.fig1", panels, payload, fig, text=payload["verdict"]).save(cfg.profile)


def e3(cfg: OperatorSamplerConfig, t1: Artefact, extra: Artefact) -> Artefact:
    """E3: memorisation and the prior projection's effective draws on images; ``B.E3``."""
    payload = report.artefact_e3(_meta(cfg, "dataset"), t1.data, extra.data)
    return Artefact("B.E3", payload["ours"], payload, text=payload["verdicts"]["projection"]).save(cfg.profile)


def table2(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """Table 2: the effect of M (VE, paper preset); ``B.table2``."""
    res = image_experiments.table2(setup, cfg.fp_config(), cfg.M_values, cfg.sweep_groups, cfg.sweep_per_group, cfg.frechet)
    intro = (f"M = {', '.join(str(m) for m in cfg.M_values)} (paper: 500 to 5000; the pool holds {cfg.pool} "
             f"{cfg.dataset} images)")
    return _sweep_artefact(cfg, "B.table2", res, report.artefact_table2, figures.table2_figure, intro)


def table3(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """Table 3: the effect of L (VE, paper preset, common random numbers); ``B.table3``."""
    res = image_experiments.table3(setup, cfg.fp_config(), cfg.L_values, cfg.sweep_groups, cfg.sweep_per_group, cfg.frechet)
    intro = f"L = {', '.join(str(v) for v in cfg.L_values)} with M = {res['M']}"
    return _sweep_artefact(cfg, "B.table3", res, report.artefact_table3, figures.table3_figure, intro)


def _sweep_artefact(cfg: OperatorSamplerConfig, artefact: str, res: dict, assemble, draw, intro: str) -> Artefact:
    """The stored artefact of a Table 2/3 sweep: data, verdict, figure and the table of rows."""
    paper = paper_values("b")
    meta = _meta(cfg, "dataset", preset="paper", sde="ve", groups=cfg.sweep_groups, per_group=cfg.sweep_per_group)
    payload = assemble(meta, res, paper)
    fig = draw(res, paper, metric_name(res["rows"]), cfg.dataset)
    text = f"{intro}, {_groups(cfg.sweep_groups, cfg.sweep_per_group)} each. {payload['verdict']}"
    return Artefact(artefact, res, payload, fig, {"": tables.rows_with_fd(res["rows"])}, text).save(cfg.profile)


def fig2(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """Fig. 2: structured initialisations and what the chain makes of them; ``B.fig2``."""
    res = image_experiments.fig2_inits(setup, cfg.fp_config(), cfg.fig2_M, cfg.fig2_images)
    payload = report.artefact_fig2(_meta(cfg), res, paper_values("b"))
    text = (f"{cfg.fig2_images} structured initialisations with M = {cfg.fig2_M} references (paper: 5000), VE. "
            f"{payload['verdict']}")
    return Artefact("B.fig2", res, payload, figures.fig2_figure(res), text=text).save(cfg.profile)


def e4(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """E4: ablations of the choices the paper leaves open, one group each (VE); ``B.E4``."""
    res = image_experiments.ablations(setup, cfg.fp_config(), cfg.ablation_images, cfg.frechet)
    payload = report.artefact_e4(_meta(cfg, "dataset", images=cfg.ablation_images), res)
    text = f"One group of {cfg.ablation_images} images per variant ({cfg.dataset}, M = {cfg.M}, J = {cfg.J}). {payload['verdict']}"
    return Artefact("B.E4", res, payload, tables={"": tables.rows_with_fd(res["rows"])}, text=text).save(cfg.profile)
