"""Pre-screening before human review: `kdanomaly inspect` and `kdanomaly calibrate` (see ``run`` and ``calibration``)."""
