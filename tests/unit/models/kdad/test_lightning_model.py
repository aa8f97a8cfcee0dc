"""KDAnomaly as an Anomalib model, untrained: ablation switches, pre-processing, bad configuration."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from kdanomaly import KDAnomaly
from kdanomaly.weights import MissingWeightsError


@pytest.mark.parametrize(("use_simam", "use_sspcab"), [(False, False), (True, False), (False, True)])
def test_ablation_switches_change_the_student(use_simam: bool, use_sspcab: bool) -> None:
    model = KDAnomaly(use_simam=use_simam, use_sspcab=use_sspcab, visualizer=False)
    has_simam = any(type(m).__name__ == "SimAM" for m in model.model.student.modules())
    assert has_simam == use_simam
    assert any(type(m).__name__ == "SSPCAB" for m in model.model.modules()) == use_sspcab


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ("reverse", False, 5e-3, (0.5, 0.999))),
        ({"memory_kind": "prototype"}, ("forward", True, 1e-3, (0.9, 0.999))),
        ({"distillation": "forward", "student_pretrained": False}, ("forward", False, 1e-2, (0.9, 0.999))),
        ({"learning_rate": 1e-4, "betas": (0.9, 0.99)}, ("reverse", False, 1e-4, (0.9, 0.99))),
    ],
)
def test_each_student_gets_its_own_recipe_unless_told(kwargs: dict, expected: tuple) -> None:
    """Reverse for the positional memory with RD4AD's Adam; the k-shot memory keeps the pretrained forward student."""
    from kdanomaly.models.kdad.reverse_student import ReverseStudent

    model = KDAnomaly(**kwargs, visualizer=False)
    distillation, pretrained, learning_rate, betas = expected
    assert model.model.distillation == distillation
    assert isinstance(model.model.student, ReverseStudent) == (distillation == "reverse")
    if distillation == "forward":
        first_student, first_teacher = (next(m.model.parameters()) for m in (model.model.student, model.model.teacher))
        assert torch.equal(first_student, first_teacher) == pretrained
    assert (model.learning_rate, model.betas) == (learning_rate, betas)
    optimiser = model.configure_optimizers()
    assert optimiser.defaults["lr"] == learning_rate and tuple(optimiser.defaults["betas"]) == betas


def test_the_shipped_config_spells_out_every_switch_at_its_default() -> None:
    """configs/kdanomaly/mvtec.yaml is documented as KDAnomaly's defaults written out; a changed default must
    change it too (a default of None is derived from other switches, e.g. ``memory_layers``, and written resolved)."""
    config = yaml.safe_load((Path(__file__).parents[4] / "configs" / "kdanomaly" / "mvtec.yaml").read_text())
    configured = config["model"]["init_args"]
    parameters = inspect.signature(KDAnomaly.__init__).parameters
    defaults = {
        name: p.default
        for name, p in parameters.items()
        if p.default not in (inspect.Parameter.empty, None) and name in configured
    }
    assert {name: configured[name] for name in defaults} == {
        name: list(value) if isinstance(value, tuple) else value for name, value in defaults.items()
    }
    assert set(configured) <= set(parameters)


def test_default_pre_processor_uses_the_backbones_normalisation() -> None:
    assert KDAnomaly(visualizer=False).pre_processor.transform.transforms[-1].mean == [0.5, 0.5, 0.5]
    imagenet = KDAnomaly.configure_pre_processor(backbone="resnet18", layers=["layer1", "layer2", "layer3"])
    assert imagenet.transform.transforms[-1].mean == pytest.approx([0.485, 0.456, 0.406])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": ["blocks.1", "blocks.9"]}, ValueError, "unknown layer"),
        ({"backbone": "resnet_nonexistent"}, ValueError, "unknown backbone"),
        ({"backbone": "resnet18", "layers": ["layer1", "layer2"]}, MissingWeightsError, "kdanomaly weights install"),
    ],
)
def test_bad_configuration_is_rejected_before_any_work(
    kwargs: dict, error: type[Exception], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kdanomaly import weights

    monkeypatch.setattr(weights.hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(error, match=message):
        KDAnomaly(**kwargs)


def _saved(model: KDAnomaly, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """``model`` as a Lightning checkpoint, without the hyperparameters ``drop`` (as an older version wrote it)."""
    import lightning

    hyper_parameters = {key: value for key, value in model.hparams.items() if key not in drop}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters,
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    return path


def test_checkpoints_load_with_the_student_they_were_trained_with(tmp_path: Path) -> None:
    """A checkpoint records the resolved student (later defaults cannot change it); one written before
    ``distillation`` was a switch holds a forward student and loads as one."""
    from kdanomaly.models.kdad.reverse_student import ReverseStudent

    reverse = KDAnomaly(memory_weight=0.0, visualizer=False)
    assert reverse.hparams["distillation"] == "reverse" and reverse.hparams["learning_rate"] == 5e-3
    loaded = KDAnomaly.load_from_checkpoint(_saved(reverse, tmp_path / "new.ckpt"), visualizer=False)
    assert isinstance(loaded.model.student, ReverseStudent)
    forward = KDAnomaly(distillation="forward", memory_weight=0.0, visualizer=False)
    old = _saved(forward, tmp_path / "old.ckpt", drop=("distillation", "betas"))
    loaded = KDAnomaly.load_from_checkpoint(old, visualizer=False)
    assert loaded.model.distillation == "forward" and loaded.learning_rate == 1e-3
    for name, value in forward.model.student.state_dict().items():
        assert torch.equal(loaded.model.student.state_dict()[name], value)
