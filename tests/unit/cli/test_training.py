"""``kdanomaly fewshot train`` and ``detect train`` parsed and built (not trained): config files, defaults, links,
and a one-line error for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from kdanomaly.cli import detector, main, recognizer
from kdanomaly.models.components import DEFAULT_BACKBONE

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
QUICK = ["--model.pretrained", "false"]  # no weights to load: the tests build the model, they do not train it


def _labelled(root: Path) -> Path:
    """``root/<class>_<n>.png``, two images of each of ``crazing``, ``pits`` and ``scratch``."""
    root.mkdir()
    for name in ("pits", "crazing", "scratch"):
        for index in range(2):
            write_png((torch.rand(3, 16, 16) * 255).to(torch.uint8), str(root / f"{name}_{index}.png"))
    return root


def _boxed(root: Path) -> list[str]:
    """``--data.images`` and ``--data.annotations`` of five images, each with one box of ``bar`` or ``square``."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for index in range(5):
        write_png((torch.rand(3, 40, 40) * 255).to(torch.uint8), str(images / f"scene{index}.png"))
        name = "bar" if index % 2 else "square"
        box = "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>25</xmax><ymax>30</ymax></bndbox>"
        xml = f"<annotation><object><name>{name}</name>{box}</object></annotation>"
        (annotations / f"scene{index}.xml").write_text(xml)
    return ["--data.images", str(images), "--data.annotations", str(annotations)]


def _without_config(config: object) -> dict:
    """The parsed settings, without the list of config files they came from."""
    settings = config.as_dict()  # type: ignore[attr-defined]
    settings.pop("config")
    return settings


def test_recognizer_config_file_spells_out_the_defaults(tmp_path: Path) -> None:
    required = ["--data.root", str(_labelled(tmp_path / "types")), "--out", str(tmp_path / "r.ckpt"), *QUICK]
    plain = recognizer.training_cli(required)
    configured = recognizer.training_cli(["-c", str(CONFIGS / "recognizer" / "default.yaml"), *required])
    assert _without_config(plain.config) == _without_config(configured.config)
    assert plain.config.data.size == 128 and plain.config.data.batch_size == 32
    assert plain.config.model.backbone == DEFAULT_BACKBONE and plain.config.out == tmp_path / "r.ckpt"
    trainer = plain.trainer
    assert trainer.max_epochs == 10 and trainer.logger is None and trainer.checkpoint_callback is None
    assert plain.model.class_names == ["crazing", "pits", "scratch"]  # from the data


def test_recognizer_options_reach_the_datamodule_and_the_model(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "types")
    cli = recognizer.training_cli(
        ["--data.root", str(root), "--data.classes", "[scratch, pits]", "--data.size", "32", "--data.batch_size", "4",
         "--trainer.max_epochs", "3", "--out", str(tmp_path / "r.ckpt"), *QUICK]
    )  # fmt: skip
    assert cli.model.class_names == ["pits", "scratch"] and len(cli.datamodule.images.paths) == 4
    assert (cli.datamodule.size, cli.datamodule.batch_size, cli.trainer.max_epochs) == (32, 4, 3)


def test_detector_config_file_spells_out_the_defaults(tmp_path: Path) -> None:
    required = [*_boxed(tmp_path), "--out", str(tmp_path / "d.ckpt"), *QUICK]
    plain = detector.training_cli(required)
    configured = detector.training_cli(["-c", str(CONFIGS / "detector" / "default.yaml"), *required])
    assert _without_config(plain.config) == _without_config(configured.config)
    data = plain.config.data
    assert (data.test_fraction, data.seed, data.flips, data.image_size, data.batch_size) == (0.2, 0, True, 224, 4)
    assert data.classes is None and data.per_class is None and plain.config.seed_everything == 0
    hparams = plain.model.hparams
    assert (hparams.pyramid, hparams.deformable_blocks, hparams.contrastive_weight) == ("ghost", 1, 0.1)
    assert hparams.cosine_classifier is False and hparams.image_size == 224 and hparams.backbone == DEFAULT_BACKBONE
    assert plain.model.class_names == ["bar", "square"]
    trainer = plain.trainer
    assert trainer.max_epochs == 20 and trainer.check_val_every_n_epoch == 20  # the held-out mAP once, at the end
    assert trainer.logger is None and trainer.checkpoint_callback is None


def test_detector_image_size_seed_and_validation_follow_the_options(tmp_path: Path) -> None:
    cli = detector.training_cli(
        [*_boxed(tmp_path), "--data.image_size", "96", "--data.seed", "3", "--data.classes", "[square]",
         "--model.pyramid", "standard", "--model.cosine_classifier", "true", "--trainer.max_epochs", "5",
         "--out", str(tmp_path / "d.ckpt"), *QUICK]
    )  # fmt: skip
    assert cli.model.hparams.image_size == 96 and cli.config.seed_everything == 3
    assert cli.model.class_names == ["square"] and cli.model.hparams.pyramid == "standard"
    assert cli.model.hparams.cosine_classifier is True and cli.trainer.check_val_every_n_epoch == 5


def test_missing_required_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(_labelled(tmp_path / "types"))
    for argv, missing in [
        (["fewshot", "train", "--out", str(tmp_path / "r.ckpt")], "data.root"),
        (["fewshot", "train", "--data.root", root], "out"),
        (["detect", "train", "--data.images", root, "--out", str(tmp_path / "d.ckpt")], "data.annotations"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and f"'{missing}' is required" in capsys.readouterr().err


def test_bad_data_ends_the_command_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    root, out = str(_labelled(tmp_path / "types")), ["--out", str(tmp_path / "x.ckpt")]
    for argv, message in [
        (["fewshot", "train", "--data.root", str(tmp_path / "empty")], r"fewshot train: error: \S+ holds no images.*"),
        (["fewshot", "train", "--data.root", root, "--data.classes", "[pits, dent]"], r".*: no images of \['dent'\].*"),
        (["detect", "train", *_boxed(tmp_path / "boxed"), "--data.classes", "[dent]"], r".*\['dent'\] do not occur.*"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *out])
        assert re.fullmatch(f"kdanomaly {message}", str(exit_info.value.code))  # one line (no newline in it)
