"""How often `kdanomaly fit` writes its resumable checkpoints."""

from __future__ import annotations

import math

import pytest

from kdanomaly.station.fit import CHECKPOINTS_PER_FIT, FitOptions, checkpoint_interval


@pytest.mark.parametrize("images", [8, 48, 60, 200, 1000])
@pytest.mark.parametrize("steps", [40, 500, 5000])
def test_a_fit_checkpoints_every_epoch_or_about_twenty_times(images: int, steps: int) -> None:
    options = FitOptions(steps=steps)
    every = checkpoint_interval(images, options)
    epochs = math.ceil(steps / math.ceil(images / options.batch_size))
    checkpoints = epochs // every
    if epochs <= CHECKPOINTS_PER_FIT:
        assert every == 1
    else:
        assert CHECKPOINTS_PER_FIT * 2 / 3 <= checkpoints <= CHECKPOINTS_PER_FIT * 2


def test_a_small_folder_checkpoints_every_few_epochs() -> None:
    assert checkpoint_interval(48, FitOptions(steps=500)) == 4  # 6 steps an epoch, a checkpoint every 24 steps
