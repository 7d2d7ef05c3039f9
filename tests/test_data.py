"""Data sets (paper A Sec. 6.1) and the 2-D mixture: shapes, ranges, order, errors; no shared data folder needed."""

import pickle
import struct

import numpy as np
import pytest
import torch

from kl_repro.core.config import ConfigError
from kl_repro.core.images import to_float, to_uint8
from kl_repro.data import DataConfig, Toy2D, data_shape, derive_seed, generator, load_dataset, load_images


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_digits_images_labels_and_split():
    x, y = load_images(DataConfig(name="digits", split="all"))
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert y[:10].tolist() == list(range(10))  # scikit-learn's fixed order
    xt, _ = load_images(DataConfig(name="digits", split="train"))
    xs, _ = load_images(DataConfig(name="digits", split="test"))
    assert xt.shape[0] == 1500 and xs.shape[0] == 297
    assert torch.equal(torch.cat([xt, xs]), x)
    assert load_images(DataConfig(name="digits", subset=7))[0].shape[0] == 7
    assert data_shape(DataConfig(name="digits")) == (1, 8, 8)


def test_resize_and_float_range():
    x, _ = load_images(DataConfig(name="digits", resolution=16, subset=20))
    assert x.shape == (20, 1, 16, 16)
    ds = load_dataset(DataConfig(name="digits", subset=20))
    v = torch.stack([ds[i] for i in range(20)])
    assert v.dtype == torch.float32 and v.shape == (20, 1, 8, 8)
    assert float(v.min()) == -1.0 and float(v.max()) == 1.0
    assert torch.allclose(to_float(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_uint8_float_conversion_round_trips_and_rounds_half_to_even():
    u = torch.arange(256, dtype=torch.uint8)
    x = to_float(u)
    assert x.dtype == torch.float32 and float(x[0]) == -1.0 and float(x[-1]) == 1.0
    assert torch.equal(to_uint8(x), u)  # every uint8 value survives the round trip
    assert to_uint8(u) is u  # uint8 passes through
    v = torch.tensor([-2.0, -1.0, -0.5, 0.0, 1.0, 3.0], dtype=torch.float64)
    assert to_uint8(v).tolist() == [0, 0, 64, 128, 255, 255]  # saturates; 127.5 rounds to even (128)


def test_flip_mirrors_width_only_where_asked():
    ds = load_dataset(DataConfig(name="digits", subset=4))
    idx = torch.arange(4)
    mask = torch.tensor([True, False, True, False])
    b = ds.batch(idx, mask)
    plain = ds.batch(idx, None)
    assert torch.equal(b[0], plain[0].flip(-1)) and torch.equal(b[1], plain[1])
    assert not torch.equal(b[0], plain[0])
    noflip = load_dataset(DataConfig(name="digits", subset=4, flip=False))
    assert torch.equal(noflip.batch(idx, mask), plain)


def _write_idx(path, arr, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes())


def _fake_mnist(root, n_train=5, n_test=3):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", tr, 2051)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(n_train, dtype=np.uint8), 2049)
    _write_idx(raw / "t10k-images-idx3-ubyte", te, 2051)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(n_test, dtype=np.uint8) + 5, 2049)
    return tr, te


def test_mnist_from_torchvision_layout_rescaled_to_32(tmp_path):
    tr, te = _fake_mnist(tmp_path)
    x, y = load_images(DataConfig(name="mnist", root=str(tmp_path), split="all"))
    assert x.shape == (8, 1, 32, 32) and y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    x28, _ = load_images(DataConfig(name="mnist", root=str(tmp_path), resolution=28))
    assert torch.equal(x28[:, 0], torch.from_numpy(tr))  # no resize at the native size, order kept
    # the 28 -> 32 rescale keeps the mean brightness
    assert abs(x.float().mean().item() - np.concatenate([tr, te]).mean()) < 2.0


def test_missing_data_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KL_REPRO_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match=r"MNIST/raw/train-images-idx3-ubyte"):
        load_images(DataConfig(name="mnist"))
    with pytest.raises(ConfigError, match=r"cifar-10-batches-py/batches.meta"):
        load_images(DataConfig(name="cifar10"))
    with pytest.raises(ConfigError, match="celebahq"):
        load_images(DataConfig(name="celebahq", root=str(tmp_path / "nowhere")))


def _fake_cifar(root, batches=(1, 2), n=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data = {}
    for name in [f"data_batch_{b}" for b in batches] + ["test_batch"]:
        arr = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[name] = arr
        with open(folder / name, "wb") as f:
            pickle.dump({"data": arr, "labels": list(range(n)), "batch_label": name, "filenames": [""] * n}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    return data


def test_cifar_partial_batches_in_order(tmp_path):
    data = _fake_cifar(tmp_path)
    x, y = load_images(DataConfig(name="cifar10", root=str(tmp_path)))
    assert x.shape == (6, 3, 32, 32)
    # first image: planes R, G, B of the row, row-major
    assert torch.equal(x[0], torch.from_numpy(data["data_batch_1"][0].reshape(3, 32, 32)))
    assert torch.equal(x[3], torch.from_numpy(data["data_batch_2"][0].reshape(3, 32, 32)))
    xt, _ = load_images(DataConfig(name="cifar10", root=str(tmp_path), split="test"))
    assert torch.equal(xt[2], torch.from_numpy(data["test_batch"][2].reshape(3, 32, 32)))


def test_celebahq_folder_and_bad_files(tmp_path):
    from PIL import Image

    folder = tmp_path / "celebahq"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    x, y = load_images(DataConfig(name="celebahq", root=str(tmp_path), resolution=8))
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [-1, -1, -1]
    assert data_shape(DataConfig(name="celebahq")) == (3, 64, 64)
    (folder / "00003.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"00003\.png.*zero-byte"):
        load_images(DataConfig(name="celebahq", root=str(tmp_path), resolution=8))
    (folder / "00003.png").write_bytes(b"not a png at all")
    with pytest.raises(ConfigError, match=r"00003\.png.*cannot be read"):
        load_images(DataConfig(name="celebahq", root=str(tmp_path), resolution=8))
    (folder / "00003.png").unlink()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"notes\.txt.*not an image"):
        load_images(DataConfig(name="celebahq", root=str(tmp_path), resolution=8))


@pytest.mark.parametrize("bad", [dict(name="imagenet"), dict(name="toy2d", resolution=8), dict(name="digits", resolution=2),
                                 dict(name="digits", subset=0), dict(name="digits", split="val")])
def test_bad_data_config(bad):
    with pytest.raises(ConfigError):
        DataConfig(**bad)


def test_toy2d_density_score_and_samples():
    m = Toy2D()
    # the density integrates to one (grid quadrature)
    g = torch.linspace(-5, 5, 401, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    mass = m.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    # the score is the gradient of log p
    x = torch.tensor([[0.3, -0.2], [1.5, 1.0], [-2.2, 0.4]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(m.log_prob(x).sum(), x)
    assert torch.allclose(m.score(x.detach()), grad, atol=1e-10)
    # samples: mixture mean sum_j w_j m_j = (-0.4, 0.4), mode frequencies = weights
    s = m.sample(20000, generator(0))
    assert s.shape == (20000, 2) and s.dtype == torch.float32
    assert torch.allclose(s.mean(0), torch.tensor([-0.4, 0.4]), atol=0.03)
    nearest = torch.cdist(s.double(), torch.tensor(m.means, dtype=torch.float64)).argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015)
    # perturbed mixture: alpha x0 + sigma eps has means alpha m_j and variances alpha^2 s^2 + sigma^2
    p = m.perturbed(0.5, 0.8)
    assert p.means[1] == (1.0, 0.0) and p.stds[0] == pytest.approx((0.25 * 0.09 + 0.64) ** 0.5)
    ds = load_dataset(DataConfig(name="toy2d", subset=100))
    assert ds.batch(torch.arange(5)).shape == (5, 2)
    with pytest.raises(ConfigError):
        Toy2D(weights=(0.5, 0.5, 0.5))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1, "noise") == derive_seed(0, 1, "noise")
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert 0 <= derive_seed("x") < 2**63
    a = torch.randn(3, generator=generator(5, "a"))
    assert torch.equal(a, torch.randn(3, generator=generator(5, "a")))
