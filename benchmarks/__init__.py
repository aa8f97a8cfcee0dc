"""Benchmarks of kdanomaly's models (not tests: run them by hand or in the background)."""
