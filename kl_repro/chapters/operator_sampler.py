"""Chapter 6 (``notebooks/06_operator_sampler.ipynb``): paper B's Fokker-Planck sampler, Tables 1-3, Figs. 1-2, E1-E4.

Paper B, Sec. 3-4 and Algorithm 1; Methods B.1-B.5 and E.  Each function makes one section: it runs the
experiment (:mod:`kl_repro.paper_b.toy_experiments`, :mod:`kl_repro.paper_b.image_experiments`), draws
the figure, stores the artefact (ids ``B.E1``, ``B.E2``, ``B.table1``, ``B.fig1``, ``B.E3``, ``B.table2``,
``B.table3``, ``B.fig2``, ``B.E4``) and returns an :class:`~kl_repro.paper_b.report.Artefact`, which a
notebook displays as its tables, figure and a summary with the values and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kl_repro.chapters.base import ChapterConfig, set_threads
from kl_repro.core import plotting
from kl_repro.core.config import require
from kl_repro.core.registry import paper_values
from kl_repro.core.tables import display_table
from kl_repro.paper_b import claims as claim_table
from kl_repro.paper_b import figures, image_data, image_experiments, report, score_training, speed, tables, toy_experiments
from kl_repro.paper_b.fp_config import FPConfig, fp_preset
from kl_repro.paper_b.image_runs import FrechetSpec
from kl_repro.paper_b.report import Artefact
from kl_repro.paper_b.trained_score import ScoreNetConfig, net_label
from kl_repro.paper_b.verdicts import metric_name

__all__ = ["OperatorSamplerConfig", "prepare", "e1", "e2", "image_setup", "score_networks", "table1", "extra_datasets", "fig1",
           "e3", "table2", "table3", "fig2", "e4", "claims"]


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
    # the small score network trained by DSM (paper B eq. (3)) behind Tables 1-3 and Figs. 1-2: a residual MLP
    score_sdes: tuple[str, ...] = ("ve", "vp")  # one network per SDE
    score_width: int = 256
    score_blocks: int = 3
    score_steps: int = 3000  # score_sde: 1.3 M steps
    score_batch: int = 128
    score_lr: float = 1e-3  # score_sde: 2e-4 (over 1.3 M steps)
    score_warmup: int = 100  # score_sde: 5000
    score_ema: float = 0.999  # score_sde: 0.9999 (over 1.3 M steps)
    sweep_score: Literal["trained", "ideal"] = "trained"  # the score model of Tables 2-3 and Fig. 2
    ideal_reference: bool = True  # Table 1 also on the ideal score (the exact-score reference)
    fd_seeds: int = 3  # Table 1's FP VE set drawn with this many seeds: the Frechet distance's spread over seeds
    deep_timing: bool = True  # Table 1's NCSN++ / DDPM++ deep timing rows (random weights, about a minute on 2 cores)

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
        require(len(self.score_sdes) >= 1 and set(self.score_sdes) <= {"ve", "vp"} and len(set(self.score_sdes)) == len(self.score_sdes),
                f"score_sdes must hold 've' and/or 'vp' once each, got {self.score_sdes}")
        require("ve" in self.score_sdes or self.sweep_score == "ideal", "Tables 2-3 and Fig. 2 use VE: score_sdes must include 've'")
        require(self.fd_seeds >= 1, f"fd_seeds must be >= 1, got {self.fd_seeds}")
        self.score_config("ve")  # validates the network's settings

    def score_config(self, kind: str) -> ScoreNetConfig:
        """The stored score network of ``kind`` (its config keys the trained model in the results folder)."""
        return ScoreNetConfig(dataset=self.dataset, pool=self.pool, sde=kind, width=self.score_width, blocks=self.score_blocks,
                              steps=self.score_steps, batch=self.score_batch, lr=self.score_lr, warmup=self.score_warmup,
                              ema_decay=self.score_ema, seed=self.seed)

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


def score_networks(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """The small score networks (one per SDE of ``cfg.score_sdes``), trained by DSM once and stored, else loaded.

    Returns an :class:`Artefact` (not stored: the networks live in the results folder) whose ``data`` is
    ``setup`` with the trained networks as its score models (Tables 1-3, Figs. 1-2 use it).
    """
    models, nets = {}, {}
    for kind in cfg.score_sdes:
        ncfg = cfg.score_config(kind)
        models[kind], info = score_training.load_or_train(cfg.profile, ncfg, setup.pools[kind], setup.sdes[kind], progress=True)
        nets[kind] = {**info, "label": net_label(ncfg, info["parameters"])}
    params = next(iter(nets.values()))["parameters"]
    label = f"trained residual MLP ({cfg.score_blocks} x {cfg.score_width}, {params / 1e6:.2f} M parameters)"
    trained = image_data.with_scores(setup, models, label, nets)
    caption = plotting.caption(cfg.profile, pool=cfg.pool, steps=cfg.score_steps, batch=cfg.score_batch, seed=cfg.seed)
    text = (f"{label}, one per SDE ({', '.join(k.upper() for k in cfg.score_sdes)}), trained by denoising score matching (eq. (3)) on "
            f"the {cfg.pool} {cfg.dataset} training images for {cfg.score_steps} steps of {cfg.score_batch} images (Adam, lr "
            f"{cfg.score_lr:g}, EMA {cfg.score_ema:g}); "
            + "; ".join(f"{k.upper()}: {n['seconds']:.0f} s of training, " + ("loaded from the results folder" if n["reused"] else "trained now")
                        for k, n in nets.items()) + ". PC and the FP sampler below use these networks.")
    return Artefact(None, trained, figure=figures.score_training_figure(nets, caption), tables={"": tables.score_models_table(nets)},
                    text=text)


def _deep_rows(cfg: OperatorSamplerConfig) -> list[dict] | None:
    """The NCSN++ / DDPM++ deep timing rows of Table 1 (random weights, :mod:`kl_repro.paper_b.speed`); None when off."""
    return speed.deep_net_table1_rows() if cfg.deep_timing else None


def table1(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup, nets: Artefact) -> Artefact:
    """Table 1: the paper's rows, FP against PC from the same trained network, the deep-network timing and the ideal
    score as the exact-score reference: times, FD with bootstrap intervals, memorisation; ``B.table1``."""
    paper, trained, base = paper_values("b"), nets.data, cfg.fp_config()
    res = image_experiments.table1(trained, base, cfg.pc_images, cfg.frechet, cfg.score_sdes)
    ideal = image_experiments.table1(setup, base, cfg.pc_images, cfg.frechet) if cfg.ideal_reference else None
    first = next((r for r in res["rows"] if r["sde"] == "ve" and r["preset"] == "paper"), None)
    spread = (image_experiments.fd_seed_spread(trained, base, range(cfg.seed + 1, cfg.seed + cfg.fd_seeds), cfg.frechet, first)
              if cfg.fd and cfg.fd_seeds > 1 and first is not None else None)
    deep = _deep_rows(cfg)
    meta = _meta(cfg, "dataset", "pool", score=trained.score_label, n_groups=cfg.n_groups, n_per_group=cfg.n_per_group,
                 pc_images=cfg.pc_images)
    payload = report.artefact_table1(meta, res, ideal, deep, paper, spread)
    res["ideal"] = ideal
    floor = f" Held-out test images score {res['fd_floor']['value']:.3g} (the floor)." if res["fd_floor"] else ""
    spread_text = (f" The {spread['metric']} of the FP VE set over {len(spread['values'])} seeds: "
                   + ", ".join(f"{x:.3g}" for x in spread["values"]) + f" (standard deviation {spread['std_over_seeds']:.2g}; "
                   f"bootstrap standard deviation of one set {min(spread['boot_std']):.2g} to {max(spread['boot_std']):.2g}).") if spread else ""
    text = (f"{cfg.dataset}: {cfg.pool} training images behind the {trained.score_label} and the references. "
            f"FP: {_groups(cfg.n_groups, cfg.n_per_group)}, M = {cfg.M}, L = {cfg.L}, J = {cfg.J}; "
            f"PC: {cfg.pc_images} images, {cfg.pc_N} steps.{floor}{spread_text} "
            f"IS: {res['IS']}.\n\n" + "\n\n".join(payload["verdicts"].values()))
    frame = tables.table1_frame(res, ideal, deep, paper, cfg.dataset)
    return Artefact("B.table1", res, payload, figures.table1_figure(res), {"Table 1: paper and ours": frame}, text).save(cfg.profile)


def extra_datasets(cfg: OperatorSamplerConfig) -> Artefact:
    """E3's extra data sets (MNIST, CIFAR-10 subsets where ``$KL_REPRO_DATA`` has them): one group per SDE and preset."""
    res = image_experiments.extra_datasets(cfg.extra_datasets, cfg.extra_pool, cfg.fp_config(), cfg.extra_M, cfg.extra_images, cfg.pc_N)
    lines = [f"{name}: " + ("used" if d.get("available") else "absent from $KL_REPRO_DATA; skipped") for name, d in res.items()]
    return Artefact(None, res, text="; ".join(lines) if lines else "No extra data sets in this profile.")


def fig1(cfg: OperatorSamplerConfig, t1: Artefact, extra: Artefact) -> Artefact:
    """Fig. 1: sample grids from Table 1's runs and the extra data sets, with memorisation numbers; ``B.fig1``."""
    panels = [(f"{cfg.dataset} {k.replace('_', ' ')} (trained net)", imgs[:100]) for k, imgs in t1.data["images"].items()]
    if t1.data.get("ideal"):
        panels += [(f"{cfg.dataset} {k.replace('_', ' ')} (ideal score)", imgs[:100]) for k, imgs in t1.data["ideal"]["images"].items()]
    for name, d in extra.data.items():
        if d.get("available"):
            panels += [(f"{name} {k.replace('_', ' ')}", r["images"][:36]) for k, r in d["runs"].items()]
    fig = figures.grids_figure(panels, plotting.caption(cfg.profile, score=t1.data["score"], seed=cfg.seed))
    payload = report.artefact_fig1(_meta(cfg, "dataset"), t1.data, extra.data, paper_values("b"))
    return Artefact("B.fig1", panels, payload, fig, text=payload["verdict"]).save(cfg.profile)


def e3(cfg: OperatorSamplerConfig, t1: Artefact, extra: Artefact) -> Artefact:
    """E3: memorisation and the prior projection's effective draws on images; ``B.E3``."""
    payload = report.artefact_e3(_meta(cfg, "dataset"), t1.data, extra.data)
    return Artefact("B.E3", payload["ours"], payload, text=payload["verdicts"]["projection"]).save(cfg.profile)


def _sweep_setup(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup, nets: Artefact | None) -> image_data.ImageSetup:
    """The set-up of Tables 2-3 and Fig. 2: the trained networks (``cfg.sweep_score == "trained"``) or the ideal score."""
    return nets.data if cfg.sweep_score == "trained" and nets is not None else setup


def table2(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup, nets: Artefact | None = None) -> Artefact:
    """Table 2: the effect of M (VE, paper preset), on the trained network unless ``cfg.sweep_score`` says otherwise; ``B.table2``."""
    use = _sweep_setup(cfg, setup, nets)
    res = image_experiments.table2(use, cfg.fp_config(), cfg.M_values, cfg.sweep_groups, cfg.sweep_per_group, cfg.frechet)
    intro = (f"{use.score_label}; M = {', '.join(str(m) for m in cfg.M_values)} (paper: 500 to 5000; the pool holds {cfg.pool} "
             f"{cfg.dataset} images)")
    return _sweep_artefact(cfg, "B.table2", res, report.artefact_table2, figures.table2_figure, intro)


def table3(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup, nets: Artefact | None = None) -> Artefact:
    """Table 3: the effect of L (VE, paper preset, common random numbers), on the trained network by default; ``B.table3``."""
    use = _sweep_setup(cfg, setup, nets)
    res = image_experiments.table3(use, cfg.fp_config(), cfg.L_values, cfg.sweep_groups, cfg.sweep_per_group, cfg.frechet)
    intro = f"{use.score_label}; L = {', '.join(str(v) for v in cfg.L_values)} with M = {res['M']}"
    return _sweep_artefact(cfg, "B.table3", res, report.artefact_table3, figures.table3_figure, intro)


def _sweep_artefact(cfg: OperatorSamplerConfig, artefact: str, res: dict, assemble, draw, intro: str) -> Artefact:
    """The stored artefact of a Table 2/3 sweep: data, verdict, figure and the table of rows."""
    paper = paper_values("b")
    meta = _meta(cfg, "dataset", preset="paper", sde="ve", groups=cfg.sweep_groups, per_group=cfg.sweep_per_group)
    payload = assemble(meta, res, paper)
    fig = draw(res, paper, metric_name(res["rows"]), cfg.dataset)
    text = f"{intro}, {_groups(cfg.sweep_groups, cfg.sweep_per_group)} each.\n\n" + "\n\n".join(payload.get("verdicts", {}).values())
    return Artefact(artefact, res, payload, fig, {"": tables.rows_with_fd(res["rows"])}, text).save(cfg.profile)


def fig2(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup, nets: Artefact | None = None) -> Artefact:
    """Fig. 2: structured initialisations and what the chain makes of them, on the trained network by default; ``B.fig2``."""
    use = _sweep_setup(cfg, setup, nets)
    res = image_experiments.fig2_inits(use, cfg.fp_config(), cfg.fig2_M, cfg.fig2_images)
    payload = report.artefact_fig2(_meta(cfg), res, paper_values("b"))
    text = (f"{cfg.fig2_images} structured initialisations with M = {cfg.fig2_M} references (paper: 5000), VE, {use.score_label}. "
            f"{payload['verdict']}")
    return Artefact("B.fig2", res, payload, figures.fig2_figure(res), text=text).save(cfg.profile)


def e4(cfg: OperatorSamplerConfig, setup: image_data.ImageSetup) -> Artefact:
    """E4: ablations of the choices the paper leaves open, one group each (VE); ``B.E4``."""
    res = image_experiments.ablations(setup, cfg.fp_config(), cfg.ablation_images, cfg.frechet)
    payload = report.artefact_e4(_meta(cfg, "dataset", images=cfg.ablation_images), res)
    text = (f"One group of {cfg.ablation_images} images per variant ({cfg.dataset}, M = {cfg.M}, J = {cfg.J}, {setup.score_label}).\n\n"
            + "\n\n".join(payload["verdicts"].values()))
    return Artefact("B.E4", res, payload, tables={"": tables.rows_with_fd(res["rows"])}, text=text).save(cfg.profile)


def claims(cfg: OperatorSamplerConfig):
    """Paper B's claims, one row each, with our verdict and the artefact that shows it (:mod:`kl_repro.paper_b.claims`)."""
    return display_table(claim_table.claims_summary(cfg.profile),
                         caption=f"Paper B's claims (paper) and our verdicts (ours, profile {cfg.profile}).")
