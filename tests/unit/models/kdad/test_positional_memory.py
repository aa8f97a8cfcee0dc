"""The positional normal memory: exact distances, position awareness, leave-one-out, fusion, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdanomaly.models.kdad import KDADModel
from kdanomaly.models.kdad.anomaly_map import MapStatistics
from kdanomaly.models.kdad.positional_memory import PositionalMemory


def _brute_force(bank: np.ndarray, query: np.ndarray, window: int, exclude: list[int] | None = None) -> np.ndarray:
    """Nearest distance over bank images and edge-clamped positions within the window, by plain loops."""
    n, _, h, w = bank.shape
    r = window // 2
    out = np.zeros((query.shape[0], 1, h, w))
    for b in range(query.shape[0]):
        for y in range(h):
            for x in range(w):
                candidates = [
                    np.linalg.norm(
                        query[b, :, y, x] - bank[i, :, min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
                    )
                    for i in range(n)
                    if exclude is None or i != exclude[b]
                    for dy in range(-r, r + 1)
                    for dx in range(-r, r + 1)
                ]
                out[b, 0, y, x] = min(candidates)
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_distances_match_a_brute_force_search(window: int) -> None:
    generator = torch.Generator().manual_seed(0)
    bank, query = torch.randn(4, 5, 6, 7, generator=generator), torch.randn(2, 5, 6, 7, generator=generator)
    memory = PositionalMemory(window)
    memory.fit(bank)
    np.testing.assert_allclose(memory(query).numpy(), _brute_force(bank.numpy(), query.numpy(), window), atol=1e-4)
    exclude = torch.tensor([1, -1])
    expected = _brute_force(bank.numpy(), query.numpy(), window, exclude=[1, -1])
    np.testing.assert_allclose(memory(query, exclude).numpy(), expected, atol=1e-4)


def test_a_stored_image_is_at_distance_zero_unless_left_out() -> None:
    bank = torch.randn(3, 4, 5, 5)
    memory = PositionalMemory(3)
    memory.fit(bank)
    assert memory(bank).abs().max() < 1e-2
    assert (memory(bank, torch.arange(3)) > 0.1).all()


def test_features_far_from_the_origin_keep_float_precision_distances() -> None:
    """Features with a large common offset (as ReLU features have): centring keeps the expanded distance from
    cancelling large numbers, so a stored patch is at distance ~0, not at the square root of rounding noise."""
    generator = torch.Generator().manual_seed(2)
    bank = torch.randn(4, 64, 3, 3, generator=generator) + 300.0
    query = bank[:2] + 0.01 * torch.randn(2, 64, 3, 3, generator=generator)
    memory = PositionalMemory()
    memory.fit(bank)
    expected = _brute_force(bank.double().numpy(), query.double().numpy(), 1)
    np.testing.assert_allclose(memory(query).numpy(), expected, atol=1e-3)
    assert memory(bank).max() < 1e-2


def test_a_checkpoint_without_a_centre_loads_as_an_uncentred_bank() -> None:
    generator = torch.Generator().manual_seed(3)
    bank, query = torch.randn(3, 4, 5, 5, generator=generator), torch.randn(2, 4, 5, 5, generator=generator)
    memory = PositionalMemory()
    memory.fit(bank)
    uncentred = {key: value.clone() for key, value in memory.state_dict().items() if key != "centre"}
    uncentred["bank"] = uncentred["bank"] + memory.centre[:, :, None]
    uncentred["bank_norms"] = uncentred["bank"].pow(2).sum(1, keepdim=True)
    loaded = PositionalMemory()
    loaded.load_state_dict(uncentred)
    assert not loaded.centre.any()
    np.testing.assert_allclose(loaded(query).numpy(), memory(query).numpy(), atol=1e-4)


def test_normal_appearance_at_the_wrong_place_is_anomalous() -> None:
    """A patch seen only at the left edge is normal there and anomalous at the right edge."""
    bank = torch.zeros(2, 1, 8, 8)
    bank[:, :, :, 0] = 1.0  # a bright left edge in every normal image
    memory = PositionalMemory(3)
    memory.fit(bank)
    query = torch.zeros(1, 1, 8, 8)
    query[:, :, :, 0] = 1.0
    query[:, :, :, 7] = 1.0  # the same bright column at the right edge
    distances = memory(query)
    assert distances[..., 0].max() == 0
    assert distances[..., 7].min() == pytest.approx(1.0)


def test_the_bank_survives_a_state_dict_round_trip() -> None:
    memory = PositionalMemory(3)
    memory.fit(torch.randn(3, 4, 5, 5))
    restored = PositionalMemory(3)
    restored.load_state_dict(memory.state_dict())
    query = torch.randn(2, 4, 5, 5)
    assert torch.equal(restored(query), memory(query))


def test_k_center_reduction_keeps_the_farthest_points_and_their_images() -> None:
    """On one position, greedy k-center picks the first point, then the farthest, then the farthest from both."""
    values = torch.tensor([0.0, 0.1, 10.0, 5.0, 9.9])
    memory = PositionalMemory()
    memory.fit(values.reshape(5, 1, 1, 1))
    memory.reduce(3)
    assert (memory.bank + memory.centre[:, :, None]).flatten().tolist() == pytest.approx([0.0, 10.0, 5.0])
    assert memory.candidate_images.flatten().tolist() == [0, 2, 3]
    torch.testing.assert_close(memory.bank_norms.flatten(), memory.bank.flatten() ** 2)
    distances = memory(torch.tensor([9.0]).reshape(1, 1, 1, 1), exclude=torch.tensor([2]))
    assert distances.item() == pytest.approx(4.0)  # 10.0 (image 2) left out, nearest kept is 5.0
    memory.reduce(10)  # more than it holds: unchanged
    assert memory.bank.shape[-1] == 3


def test_bad_memory_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="odd positive"):
        PositionalMemory(2)
    memory = PositionalMemory()
    with pytest.raises(RuntimeError, match="memory is empty"):
        memory(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        memory.fit(torch.zeros(0, 4, 5, 5))
    memory.fit(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match="do not match the memory bank"):
        memory(torch.zeros(1, 4, 6, 6))


def test_fusion_standardises_both_maps_by_their_normal_statistics() -> None:
    statistics = MapStatistics()
    distillation, memory = torch.rand(4, 1, 8, 8) * 3 + 1, torch.rand(4, 1, 8, 8) * 0.1
    statistics.fit(distillation, memory)
    fused = statistics.fuse(distillation, memory, memory_weight=0.7)
    expected = (
        0.3 * (distillation - distillation.mean()) / distillation.std() + 0.7 * (memory - memory.mean()) / memory.std()
    )
    torch.testing.assert_close(fused, expected)


def test_image_max_statistics_scale_a_spiky_map_by_its_maxima_not_its_pixels() -> None:
    # A segmentation-like map: zero almost everywhere, one spike per image of varying height.
    spiky = torch.zeros(4, 1, 8, 8)
    spiky[:, 0, 3, 3] = torch.tensor([0.2, 0.4, 0.6, 0.8])
    memory = torch.rand(4, 1, 8, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)
    statistics = MapStatistics("image_max")
    statistics.fit(spiky, memory)
    maxima = torch.tensor([0.2, 0.4, 0.6, 0.8])
    memory_maxima = memory.amax(dim=(-2, -1))
    expected = torch.stack([maxima.mean(), maxima.std(), memory_maxima.mean(), memory_maxima.std()])
    torch.testing.assert_close(statistics.values, expected)
    by_pixels = MapStatistics("pixels")
    by_pixels.fit(spiky, memory)
    assert by_pixels.values[1] < statistics.values[1] / 2  # the pixel spread understates the maxima's
    with pytest.raises(ValueError, match="standardisation"):
        MapStatistics("max")  # type: ignore[arg-type]


def test_maxima_that_barely_vary_are_standardised_by_a_spread_of_one_percent_of_their_size() -> None:
    # A head whose peak is the same on every normal image: its z-scores must not explode on rounding noise.
    constant_peak = torch.zeros(4, 1, 8, 8)
    constant_peak[:, 0, 0, 0] = torch.tensor([0.3430, 0.3431, 0.3430, 0.3429])
    statistics = MapStatistics("image_max")
    statistics.fit(constant_peak, torch.rand(4, 1, 8, 8))
    torch.testing.assert_close(statistics.values[1], torch.tensor(0.01 * 0.343), rtol=1e-3, atol=0)
    rounding = statistics.fuse(constant_peak + 1e-4, torch.zeros(4, 1, 8, 8), 0.5)
    assert (rounding - statistics.fuse(constant_peak, torch.zeros(4, 1, 8, 8), 0.5)).abs().max() < 0.02


def test_image_max_statistics_of_a_single_map_are_its_pixels_statistics() -> None:
    single, memory = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8) + 2
    by_maxima, by_pixels = MapStatistics("image_max"), MapStatistics("pixels")
    by_maxima.fit(single, memory)
    by_pixels.fit(single, memory)
    assert torch.isfinite(by_maxima.values).all()
    torch.testing.assert_close(by_maxima.values, by_pixels.values)


def test_model_builds_its_memory_and_the_weight_switches_it() -> None:
    torch.manual_seed(0)
    model = KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"], memory_weight=0.7).eval()
    images = torch.randn(6, 3, 64, 64)
    with pytest.raises(RuntimeError, match="memory is empty"):
        model(images[:1])
    with pytest.raises(ValueError, match="at least 2 normal images"):
        model.build_memory([images[:1]])
    model.memory.size = 4
    model.build_memory([images[:4], images[4:]])
    assert model.memory.n_images == 6
    assert model.memory.bank.shape == (8 * 8, 40 + 112, 4)
    with torch.no_grad():
        fused = model(images).anomaly_map
        model.memory_weight = 0.0
        distillation_only = model(images).anomaly_map
    assert not torch.allclose(fused, distillation_only)
    assert (distillation_only >= 0).all()  # a raw discrepancy; the fused map is standardised


def test_refreshing_for_a_new_student_keeps_the_teacher_bank() -> None:
    torch.manual_seed(0)
    model = KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"], memory_size=4).eval()
    images = torch.randn(6, 3, 64, 64)
    with pytest.raises(RuntimeError, match="build it with teacher_bank=True first"):
        model.build_memory([images], teacher_bank=False)
    model.build_memory([images])
    bank, statistics = model.memory.bank.clone(), model.map_statistics.values.clone()
    with torch.no_grad():
        for parameter in model.student.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.build_memory([images], teacher_bank=False)
    assert torch.equal(model.memory.bank, bank)
    assert torch.equal(model.map_statistics.values[2:], statistics[2:])
    assert not torch.allclose(model.map_statistics.values[:2], statistics[:2])


def test_memory_layers_outside_the_distilled_layers_are_rejected() -> None:
    with pytest.raises(ValueError, match="subset of layers"):
        KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], memory_layers=["blocks.4"])
    with pytest.raises(ValueError, match=r"memory_weight must be in \[0, 1\]"):
        KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], memory_weight=1.5)
