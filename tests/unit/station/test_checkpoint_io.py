"""A fit's checkpoints are staged beside their target, never in the system temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdanomaly.station.checkpoint_io import PARTIAL_SUFFIX, SameFolderCheckpointIO


def test_a_checkpoint_is_staged_in_its_own_folder_and_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's writer stages in the system temporary folder (a copy across file systems); this one beside
    the target, so the final rename is atomic."""
    staged: list[object] = []
    save = torch.save

    def spy(obj: object, destination: object, *args: object, **kwargs: object) -> None:
        staged.append(destination)
        save(obj, destination, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    target.write_bytes(b"an older checkpoint")
    SameFolderCheckpointIO().save_checkpoint({"global_step": 7, "weights": torch.arange(5.0)}, target)
    assert len(staged) == 1 and isinstance(staged[0], Path) and staged[0].parent == target.parent
    loaded = torch.load(target, weights_only=False)
    assert loaded["global_step"] == 7 and torch.equal(loaded["weights"], torch.arange(5.0))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_nothing_partial(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    torch.save({"global_step": 3}, target)
    with pytest.raises(Exception, match="pickle"):
        SameFolderCheckpointIO().save_checkpoint({"global_step": 4, "unpicklable": lambda: None}, target)
    assert torch.load(target, weights_only=False) == {"global_step": 3}
    assert not target.with_name(target.name + PARTIAL_SUFFIX).exists()
