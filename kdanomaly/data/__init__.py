"""Data: the embedded synthetic surface-defect generator."""
