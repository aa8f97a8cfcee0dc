"""KDAnomaly's k-shot normal memory (KShotMemory): exact distances, held-out statistics, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdanomaly.models.kdad import KDADModel
from kdanomaly.models.kdad.kshot_memory import KShotMemory


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double().numpy()
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_distance_is_one_minus_the_best_cosine_to_any_kept_patch() -> None:
    generator = torch.Generator().manual_seed(0)
    bank, query = torch.randn(2, 6, 5, 4, generator=generator), torch.randn(3, 6, 5, 4, generator=generator)
    memory = KShotMemory(coreset_ratio=0.25)
    memory.fit(bank)
    memory.reduce()
    assert memory.patches.shape == (10, 6)  # 25 % of 2 * 5 * 4 patches
    kept = memory.patches.double().numpy()
    expected = 1 - (_unit_rows(query) @ kept.T).max(1)
    np.testing.assert_allclose(memory(query).flatten().numpy(), expected, atol=1e-5)
    assert memory(bank[:1]).min() < 1e-5  # the first patch is always a k-center pick


def test_held_out_distances_leave_the_image_or_its_neighbourhood_out() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3, 4, 5, 6, generator=generator)
    memory = KShotMemory(exclusion_radius=1)
    rows = _unit_rows(features).reshape(3, 30, 4)
    held_out = memory.held_out_distances(features).reshape(3, 30).numpy()
    for image in range(3):
        others = np.concatenate([rows[i] for i in range(3) if i != image])
        np.testing.assert_allclose(held_out[image], 1 - (rows[image] @ others.T).max(1), atol=1e-5)
    single = memory.held_out_distances(features[:1]).reshape(30).numpy()
    for position in range(30):
        y, x = divmod(position, 6)
        far = [p for p in range(30) if max(abs(p // 6 - y), abs(p % 6 - x)) > 1]
        assert single[position] == pytest.approx(1 - (rows[0][far] @ rows[0][position]).max(), abs=1e-5)


def test_kept_patches_survive_a_state_dict_round_trip() -> None:
    memory = KShotMemory()
    memory.fit(torch.randn(2, 4, 5, 5))
    memory.reduce()
    restored = KShotMemory()
    restored.load_state_dict(memory.state_dict())
    query = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(restored(query), memory(query))  # the index re-normalises: float32 rounding


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="coreset_ratio"):
        KShotMemory(coreset_ratio=0)
    memory = KShotMemory()
    with pytest.raises(RuntimeError, match="memory is empty"):
        memory(torch.zeros(1, 4, 5, 5))
    memory.fit(torch.randn(1, 4, 5, 5))
    memory.reduce()
    with pytest.raises(ValueError, match="3 channels do not match the memory's 4"):
        memory(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="memory_kind"):
        KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], memory_kind="global")  # type: ignore[arg-type]


def test_one_normal_image_positional_memory_points_to_the_kshot_mode() -> None:
    model = KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"]).eval()
    with pytest.raises(ValueError, match="memory_kind='prototype'"):
        model.build_memory([torch.randn(1, 3, 64, 64)])
