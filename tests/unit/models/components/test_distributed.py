"""Evaluation under DDP: every image scored by exactly one process (no processes started here)."""

from __future__ import annotations

import pytest

from kdanomaly.models.components.distributed import evaluation_sampler


def test_evaluation_sampler_gives_every_image_to_exactly_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch import Trainer

    shares = []
    for rank in range(2):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
        sampler = evaluation_sampler(range(7), trainer)
        assert sampler is not None
        shares.append(list(sampler))
    assert sorted(shares[0] + shares[1]) == list(range(7))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert evaluation_sampler(range(7), Trainer(accelerator="cpu", devices=1, logger=False)) is None
