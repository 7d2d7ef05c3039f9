"""The `paper` profile, dry: every run of its matrix, built with its real configuration, trained for two steps.

The `paper` profile is 1,500 GPU-hours: nobody starts it to find out that a loader, a config or a page
breaks.  Here every (run, seed) of ``kl_repro/profiles/paper.toml`` is first built exactly as the GPU
user gets it (validated :class:`RunConfig`, the 35.7 M-parameter network on the meta device), then
trained through the real entry point (:func:`kl_repro.pipeline.scheduler.worker`, i.e.
``kl-repro worker``: training, proxy-FID hook, step-0 evaluation of the fine-tuning runs, final
evaluation) on generated data in the real on-disk formats (``tests/paper_fixtures.py``: MNIST raw
idx files, the CIFAR-10 python batches, a CelebA-HQ JPEG folder read at 64 and 128 pixels), and
every page of the results chapter (notebook 04, Fig. 10 included) is rendered from these tiny runs.

Overrides, and why (everything else is the paper profile's value):

* ``steps = 2``: a couple of optimiser steps (paper: 50k-120k);
* ``B = 2``: images per step (paper 16-128; the KL network batch is ``B * d``, up to 640 images):
  a CPU step at the real batch takes minutes at 64-128 pixels;
* ``dim = 8``, ``attn_dim_head = 8``: network width (paper 64 and 32; ``dim_mults = (1, 2, 4, 8)`` and
  4 heads kept): the 35.7 M-parameter network is built, but not trained, on CPU;
* ``ddim_S = 1``: one DDIM step per sample (paper: 20, or every grid point for KL models);
* ``n_grid_samples = 4`` for the runs of Figs. 3 and 10, else 0; ``sample_every = 0``, ``eval_every = 0``
  (fine-tuning runs: 1), ``checkpoint_every = 2``: grids, hooks and checkpoints at the end of the run;
* FID with 2 proxy and 3 final samples against 4 reference images (paper: 10k / 50k, whole split);
  Figs. 7-9 with 4 samples per run (paper: 64).

FID: the CelebAHQ-128 runs (Fig. 10) are scored with the real ``inception-v3-compat`` network (the
offline weights of :mod:`kl_repro.evaluation.inception`), and one of them again in blocks of one
image, against the cached reference statistics.  Inception on CPU costs about a second per image on
a loaded 2-core machine, so every other run is scored with a stand-in extractor registered under the
Inception name (cell statistics, reported as "FID"): the same hook, final-evaluation and reference
code, without the 299 x 299 network.
"""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch
from paper_fixtures import write_all

from kl_repro.chapters import paper_a_results as chapter
from kl_repro.core import store
from kl_repro.core.config import to_dict
from kl_repro.core.profiles import Profile, load_profile
from kl_repro.evaluation import features
from kl_repro.evaluation.evaluate import EvalConfig
from kl_repro.evaluation import reference
from kl_repro.evaluation.reference import reference_stats
from kl_repro.paper_a import figures
from kl_repro.paper_a.evaluate import evaluate_run
from kl_repro.paper_a.matrix import load_matrix, planned_runs
from kl_repro.paper_a.results import load_results
from kl_repro.paper_a.run_hooks import _metric_cfg
from kl_repro.paper_a.training.run import Run, build_model
from kl_repro.pipeline.scheduler import worker

pytestmark = pytest.mark.slow

INCEPTION = "inception-v3-compat"
RUN_OVERRIDES = {"steps": 2, "B": 2, "dim": 8, "attn_dim_head": 8, "ddim_S": 1, "checkpoint_every": 2,
                 "sample_every": 0, "eval_every": 0}
GRID_ARTEFACTS = {"A.fig3", "A.fig10"}  # runs that draw a sample grid (Fig. 3 shows them; Fig. 10's at 128 px)
EVAL_OVERRIDES = {"proxy_samples": 2, "final_samples": 3, "ref_images": 4}
REAL_INCEPTION_DATA = "celebahq128"  # Fig. 10's runs: scored with the real Inception network
# RunConfig fields the overrides reach (everything else must equal the paper profile's config)
OVERRIDDEN = {("train", "steps"), ("train", "B"), ("net", "dim"), ("net", "attn_dim_head"), ("sampler", "S"),
              ("train", "checkpoint_every"), ("train", "sample_every"), ("train", "eval_every"),
              ("train", "n_grid_samples")}


def dry_profile() -> Profile:
    """The paper profile with :data:`RUN_OVERRIDES` on every run and :data:`EVAL_OVERRIDES` on every data set."""
    data = copy.deepcopy(load_profile("paper")._data)
    sec = data["paper_a"]
    for defaults in sec["defaults"].values():
        defaults.update(RUN_OVERRIDES)
    for ev in sec["eval"].values():
        ev.update(EVAL_OVERRIDES)
    for row in sec["run"]:
        p = row["params"]
        fine_tuning = "init_from" in row
        p.update(RUN_OVERRIDES, eval_every=1 if fine_tuning else 0,
                 n_grid_samples=4 if GRID_ARTEFACTS & set(row["artefacts"]) else 0)
    return Profile("paper", data)


def _stand_in(ref, device) -> features.FeatureExtractor:
    """Cell statistics (the ``tiny`` extractor) under the Inception name, reported as FID (module docstring)."""
    tiny = features._REGISTRY["tiny"](ref, device)
    return features.FeatureExtractor(INCEPTION, tiny.fn, {"name": "stand-in for inception-v3-compat"}, "FID", "KID",
                                     description="stand-in (cell statistics) for inception-v3-compat")


def _leaves(d: dict, prefix=()) -> dict:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): v})
    return out


@pytest.fixture(scope="module")
def dry(tmp_path_factory, one_thread_module):
    """Fixtures on disk, ``$KL_REPRO_DATA`` and ``$KL_REPRO_RESULTS`` pointed at them, every dry run trained."""
    base = tmp_path_factory.mktemp("paper_dry")
    mp = pytest.MonkeyPatch()
    mp.setenv("KL_REPRO_DATA", str(write_all(base / "data")))
    mp.setenv("KL_REPRO_RESULTS", str(base / "results"))
    profile = dry_profile()
    plan = planned_runs(profile)
    real_inception = features._REGISTRY[INCEPTION]
    try:
        features.register_extractor(INCEPTION, _stand_in, overwrite=True)
        for p in plan:
            if p.spec.data != REAL_INCEPTION_DATA:
                assert worker(profile, p.key) == 0
        features.register_extractor(INCEPTION, real_inception, overwrite=True)
        for p in plan:
            if p.spec.data == REAL_INCEPTION_DATA:
                assert worker(profile, p.key) == 0
        yield {"profile": profile, "plan": plan, "base": base}
    finally:
        features.register_extractor(INCEPTION, real_inception, overwrite=True)
        mp.undo()


def test_every_paper_run_builds_with_its_real_configuration():
    """Every (run, seed) of the paper matrix validates, and its network is the paper's 35.7 M-parameter U-Net."""
    real = load_profile("paper")
    plan = planned_runs(real)
    m = load_matrix(real)
    assert len(plan) == sum(len(r.seeds) for r in m.runs) == 38
    assert len({p.run_dir.name for p in plan}) == len(plan)
    networks = {}
    for p in plan:
        cfg = p.config
        assert (cfg.net.dim, cfg.net.dim_mults, cfg.net.attn_heads, cfg.net.attn_dim_head) == (64, (1, 2, 4, 8), 4, 32)
        assert cfg.train.steps >= 200 and cfg.data.res == {"mnist": 32, "cifar10": 32, "celebahq64": 64,
                                                            "celebahq128": 128}[p.spec.data]
        arch = json.dumps([to_dict(cfg.net), cfg.data.name, to_dict(cfg.diffusion), cfg.init_from is None], sort_keys=True)
        networks.setdefault(arch, p)
    for p in networks.values():  # one network per distinct architecture (channels, outputs, fine-tuning head)
        with torch.device("meta"):
            n = sum(t.numel() for t in build_model(p.config).parameters())
        assert n == pytest.approx(35.7e6, rel=0.002), p.key  # paper A, Sec. 6.2: 35.7 M parameters
    ft = [p for p in plan if p.spec.init_from]
    assert ft and all(p.depends_on == f"{p.spec.init_from}@s{p.seed}" for p in ft)


def test_dry_runs_are_the_real_runs_with_the_stated_overrides():
    """The dry matrix differs from the paper's only in the overridden fields, run by run."""
    real, dry_plan = planned_runs(load_profile("paper")), planned_runs(dry_profile())
    assert [p.key for p in real] == [p.key for p in dry_plan]
    for a, b in zip(real, dry_plan):
        la, lb = _leaves(to_dict(a.config)), _leaves(to_dict(b.config))
        changed = {k for k in la if la[k] != lb[k] and k != ("init_from",)}
        assert changed <= OVERRIDDEN, (a.key, changed - OVERRIDDEN)
        assert b.config.train.steps == 2 and b.config.train.B == 2 and b.config.net.dim == 8


def test_every_dry_run_trains_and_is_evaluated(dry):
    for p in dry["plan"]:
        run = Run.open(p.run_dir)
        assert (p.run_dir / "finished.json").exists(), p.key
        train_rows = run.metrics("train")
        assert [r["step"] for r in train_rows] == [1, 2], p.key
        assert all(np.isfinite(r["loss"]) for r in train_rows), p.key
        assert run.checkpoints(), p.key
        assert (p.run_dir / "samples" / "step-00000002.png").exists() == bool(GRID_ARTEFACTS & set(p.spec.artefacts))
        if not p.spec.evaluate:
            assert p.status() == "finished"
            continue
        evals = [r for r in run.metrics("eval") if "FID" in r]
        assert evals and evals[-1]["step"] == 2 and evals[-1]["num_samples"] == 2, p.key
        final = store.read_json(p.run_dir / "final.json")["result"]
        assert final["metric"] == "FID" and final["num_samples"] == 3 and np.isfinite(final["value"]), p.key
        assert p.status() == "finished"
    ft = [p for p in dry["plan"] if p.spec.step0_eval]
    for p in ft:
        assert [r["step"] for r in Run.open(p.run_dir).metrics("eval")] == [0, 1, 2]


def test_fid_in_blocks_matches_one_block_and_reuses_the_cached_reference(dry, monkeypatch):
    """Fig. 10's runs went through the real Inception network; a blocked final evaluation gives the same FID."""
    p = next(p for p in dry["plan"] if p.spec.data == REAL_INCEPTION_DATA and p.spec.params["model"] == "kl")
    final = store.read_json(p.run_dir / "final.json")["result"]
    assert final["extractor"].startswith("inception-v3-compat (")
    assert "stand-in" not in final["extractor"]
    ev = load_matrix(dry["profile"]).evals[REAL_INCEPTION_DATA]
    cfg = _metric_cfg(ev, "FID", ev.final_samples)
    refs = [f for f in sorted((dry["base"] / "results" / "cache" / "fid_refs").glob("celebahq-train-n4-*.npz"))
            if "weights_sha256" in json.loads(str(np.load(f)["key"]))["extractor"]]  # not the stand-in's
    assert len(refs) == 1  # one cache file for the hooks and the final numbers of both runs
    mtime = refs[0].stat().st_mtime_ns
    blocked = evaluate_run(p.run_dir, cfg=cfg.replace(sample_block=1, batch_size=2), progress=False)
    assert blocked.num_samples == 3
    assert blocked.value == pytest.approx(final["value"], rel=1e-4)
    ref = cfg.reference(Run.open(p.run_dir).config.data)
    monkeypatch.setattr(reference, "_READ", {})  # a fresh process: found through the index, images not decoded
    monkeypatch.setattr(reference, "load_images", lambda *a: pytest.fail("reference images decoded again"))
    stats = reference_stats(ref, INCEPTION)
    assert stats.path == refs[0] and refs[0].stat().st_mtime_ns == mtime and stats.num_images == 4
    assert stats.key["shape"] == [3, 128, 128]


def test_every_results_page_renders(dry, capsys, monkeypatch):
    """Every table and figure of the results chapter (notebook 04), Fig. 10 included, from the dry runs.

    Figs. 7-9 draw 4 samples per run instead of the paper's 64 (a KL sample passes d rows through the network).
    """
    monkeypatch.setattr(figures, "sample_figure", functools.partial(figures.sample_figure, n=4))
    res = load_results(dry["profile"])
    shown = [chapter.plan(res), chapter.table1(res), chapter.fig1(res), chapter.speedup(res),
             chapter.baseline_t20(res), chapter.table2(res), chapter.table3(res), chapter.fig3(res),
             chapter.fig4(res), chapter.fig5(res), chapter.fig6(res), chapter.claims(res)]
    shown += [chapter.fig2(res, panel) for panel in "abc"]
    shown += [chapter.samples(res, a) for a in ("A.fig7", "A.fig8", "A.fig9")]
    shown.append(chapter.fig10(res))
    assert chapter.readings(res) is None  # declared absent: the readings experiment runs at the cpu profile
    assert chapter.ladder(res) is None  # declared absent: the capacity ladder runs at the mnist profile
    out = capsys.readouterr().out
    assert "not produced" not in out and "A.readings: Not tested by this experiment" in out
    assert "A.ladder: Not tested by this experiment" in out
    assert all(v is not None for v in shown)
    m = load_matrix(dry["profile"])
    for art in sorted(m.artefacts()):
        stored = store.load_artefact("paper", art)
        assert stored is not None and stored.get("verdict"), art
        assert (art in m.absent) == ("absent at this profile" in json.dumps(stored)), art
    for art in ("A.fig1", "A.fig2a", "A.fig2b", "A.fig2c", "A.fig3", "A.fig4", "A.fig5", "A.fig6a", "A.fig7",
                "A.fig8", "A.fig9", "A.fig10"):
        assert store.load_artefact("paper", art).get("figure"), art
    table1 = store.load_artefact("paper", "A.table1")["ours"]["rows"]
    assert {r["our data"] for r in table1} == {"mnist", "celebahq64", "cifar10"}


def test_evaluation_device_follows_the_machine():
    """A GPU user's FID (hooks and the final 50k) runs on the GPU: ``auto`` is the default, resolved at use."""
    assert EvalConfig().device == "auto"
    assert EvalConfig().resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert EvalConfig(device="cpu").resolved_device() == "cpu"
    assert EvalConfig(device="cuda:1").resolved_device() == "cuda:1"
    with pytest.raises(Exception, match="device must be 'auto', 'cpu' or 'cuda"):
        EvalConfig(device="tpu")
