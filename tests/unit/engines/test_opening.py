"""Which engine a model runs on, and fixed-batch engines fed batches of any length."""

from __future__ import annotations

import numpy as np
import pytest

from kdanomaly.engines import opening, runtime


def test_auto_takes_openvino_and_a_model_file_limits_the_choice() -> None:
    assert opening._choose("auto", ".xml") == "openvino"
    assert opening._choose("onnx", ".onnx") == "onnx"
    with pytest.raises(ValueError, match="cannot run on torch"):
        opening._choose("torch", ".xml")
    with pytest.raises(ValueError, match="unknown engine"):
        opening._choose("tensorrt", ".ckpt")
    with pytest.raises(ValueError, match=r"\.ckpt checkpoint or a \.xml/\.onnx export"):
        opening._choose("auto", ".pt")


def test_without_openvino_a_checkpoint_falls_back_to_pytorch_with_one_notice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(opening, "installed", lambda engine: engine == "torch")
    assert opening._choose("auto", ".ckpt") == "torch"
    assert capsys.readouterr().out.count("OpenVINO is not installed") == 1
    with pytest.raises(ValueError, match=r"no engine for a \.xml model"):
        opening._choose("auto", ".xml")
    with pytest.raises(ValueError, match="pip install openvino"):
        opening._choose("openvino", ".ckpt")


def test_chunks_are_full_batches_whose_padding_is_counted() -> None:
    images = np.arange(7, dtype=np.float32).reshape(7, 1, 1, 1) * np.ones((1, 3, 2, 2), dtype=np.float32)
    chunks = runtime._chunks(images, 3)
    assert [(len(chunk), real) for chunk, real in chunks] == [(3, 3), (3, 3), (3, 1)]
    np.testing.assert_array_equal(np.concatenate([chunk[:real] for chunk, real in chunks]), images)
    assert (chunks[-1][0] == images[-1]).all()  # padded with the last image, not zeros (no division by zero)
