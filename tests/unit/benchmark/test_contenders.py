"""The leaderboard's dataset specs and profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdanomaly.benchmark.contenders import MODELS, PROFILES, TRAINABLE, DatasetSpec, expand_datasets


def test_dataset_specs_parse_and_bad_ones_are_rejected() -> None:
    spec = DatasetSpec.parse("mvtec:/data/mvtec:bottle")
    assert (spec.kind, spec.root, spec.category, spec.name) == ("mvtec", Path("/data/mvtec"), "bottle", "bottle")
    assert DatasetSpec.parse(spec.spec) == spec
    assert DatasetSpec.parse("magnetic_tile:/data/mt").name == "magnetic_tile"
    for bad in ["mvtec:/data", "tiles:/x", "folder:", "magnetic_tile:/x:extra"]:
        with pytest.raises(ValueError, match="bad dataset"):
            DatasetSpec.parse(bad)


def test_profiles_give_every_trainable_model_the_same_budget_and_validate_once() -> None:
    for profile in PROFILES.values():
        budgets = {tuple(sorted(profile.trainer_arguments(model).items())) for model in TRAINABLE}
        assert len(budgets) == 1, profile.name
        for model in MODELS:
            assert profile.trainer_arguments(model)["check_val_every_n_epoch"] >= 1_000_000
        assert profile.trainer_arguments("Padim")["max_epochs"] == 1
    assert PROFILES["cpu"].coreset_sampling_ratio == 0.1, "Patchcore gets its published coreset"
    assert PROFILES["full"].trainer_arguments("Stfpm")["max_epochs"] == 100
    assert PROFILES["full"].coreset_sampling_ratio == 0.1


def test_all_mvtec_categories_expand_and_other_specs_pass_through() -> None:
    specs = expand_datasets([DatasetSpec.parse("mvtec:/d:all"), DatasetSpec.parse("magnetic_tile:/t")])
    assert len(specs) == 16
    assert [spec.category for spec in specs[:3]] == ["bottle", "cable", "capsule"]
    assert specs[-1].name == "magnetic_tile"


def test_patchcore_keeps_the_k_center_greedy_coreset_of_its_stored_patches() -> None:
    import torch

    from kdanomaly.benchmark.patchcore import KCenterPatchcore
    from kdanomaly.memory import k_center_greedy

    model = KCenterPatchcore(backbone="tf_efficientnet_lite0", layers=["blocks.2"], coreset_sampling_ratio=0.1)
    patches = [torch.randn(300, 40), torch.randn(200, 40)]
    model.model.embedding_store.extend(patches)
    model.fit()
    bank = torch.vstack(patches)
    torch.testing.assert_close(model.model.memory_bank, bank[k_center_greedy(bank, 50)])
    assert not model.model.embedding_store
    with pytest.raises(ValueError, match="no patch embeddings"):
        model.fit()
