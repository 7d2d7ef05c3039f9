"""The benchmarks measure what they claim (no timings asserted here: performance lives in ``bench/``).

``bench.bench_train.TrainStep`` must be the training loop's step: from the same seeds it logs the same
losses as ``kl_repro.paper_a.training.loop.train``; the looped KL loss must equal the batched one.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import LoopedKLLoss, ReferenceStep, TrainStep, run_config, sign_test_p  # noqa: E402
from bench.common import Rounds, device  # noqa: E402
from kl_repro.data import DataConfig, generator, load_dataset  # noqa: E402
from kl_repro.paper_a.losses import KLLoss  # noqa: E402
from kl_repro.paper_a.training.loop import train  # noqa: E402

NET = dict(dim=8, dim_mults=(1, 2), attn_heads=1, attn_dim_head=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("model,fast", [("baseline", {}), ("KL-10d4", {}), ("KL*-8d", {"fused_adamw": True})])
def test_bench_step_is_the_training_loops_step(tmp_path, model, fast):
    cfg = run_config(model, NET, 8, 4, **fast)
    cfg = cfg.replace(train=cfg.train.replace(steps=3, checkpoint_every=3, eval_every=0, device="cpu"))
    logged = [r["loss"] for r in train(cfg, tmp_path, progress=False).metrics()]
    step = TrainStep(cfg, load_dataset(cfg.data), device())
    assert [step.step() for _ in range(3)] == logged


def test_looped_kl_loss_equals_the_batched_one():
    cfg = run_config("KL-8d", NET, 8, 4)
    step = TrainStep(cfg, load_dataset(cfg.data), torch.device("cpu"))
    x0 = load_dataset(DataConfig(name="digits")).batch(torch.arange(4))
    with torch.no_grad():
        a = KLLoss(cfg.diffusion)(step.model.eval(), x0, generator(3))[0]
        b = LoopedKLLoss(cfg.diffusion)(step.model.eval(), x0, generator(3))[0]
    assert torch.allclose(a, b, rtol=1e-5)


def test_reference_step_trains_the_same_unet_and_counts_flops():
    cfg = run_config("baseline", NET, 8, 4)
    ours = TrainStep(cfg, load_dataset(cfg.data), torch.device("cpu"))
    ref = ReferenceStep(TrainStep(cfg, load_dataset(cfg.data), torch.device("cpu")))
    for a, b in zip(ref.diffusion.model.state_dict().values(), ours.model.backbone.state_dict().values()):
        assert torch.equal(a, b)  # same initial weights
    assert 0.0 < ref.step() < 10.0
    ours.measured_step()
    assert ours.flop > 0 and ours.peak_mb > 0


def test_paired_ratio_and_sign_test():
    t = Rounds({"a": [2.0, 4.0, 3.0], "b": [1.0, 1.0, 2.0]})
    assert t.median("a") == 3.0 and t.ratio("a", "b") == 2.0
    assert sign_test_p(0, 5) == 1.0 and sign_test_p(5, 5) == 1 / 32 and sign_test_p(4, 5) == 6 / 32
