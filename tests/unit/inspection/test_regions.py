"""Regions of an anomaly map: connected components above the threshold, in original pixels."""

from __future__ import annotations

import numpy as np
import pytest

from kdanomaly.inspection.regions import find_regions


def test_regions_are_components_above_the_threshold_in_original_pixels() -> None:
    anomaly_map = np.zeros((16, 16), np.float32)
    anomaly_map[2:4, 3:7] = 5.0  # 2 x 4 block, peak 5
    anomaly_map[10:13, 10:11] = 9.0  # 3 x 1 block, peak 9
    anomaly_map[10, 11] = 0.5  # touches the second block but stays below the threshold
    regions = find_regions(anomaly_map, threshold=1.0, original_size=(64, 32))  # map grid scaled x4 in x, x2 in y
    assert [r.peak for r in regions] == [9.0, 5.0]
    assert regions[0].box == (40, 20, 44, 26) and regions[0].area == 3 * 8
    assert regions[1].box == (12, 4, 28, 8) and regions[1].area == 8 * 8
    assert find_regions(anomaly_map, threshold=9.0, original_size=(16, 16)) == []
    assert len(find_regions(anomaly_map, 1.0, (16, 16), max_regions=1)) == 1
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        find_regions(anomaly_map[None], 1.0, (16, 16))
