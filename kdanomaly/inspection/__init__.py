"""Pre-screening before human review: `kdanomaly inspect` and `kdanomaly calibrate`."""
