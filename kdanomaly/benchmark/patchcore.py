"""Anomalib's Patchcore with the project's coreset sampler, so its published 10 % coreset fits a CPU.

Anomalib's ``KCenterGreedy`` recomputes every patch's distance to each new centre (hours for the magnetic
tiles' half-million patches at 10 % here); :func:`kdanomaly.memory.k_center_greedy` picks by the same greedy
rule, exactly, with triangle-inequality pruning. Everything else is Anomalib's model unchanged.
"""

from __future__ import annotations

import torch
from anomalib.models import Patchcore

from kdanomaly.memory import k_center_greedy


class KCenterPatchcore(Patchcore):
    """Patchcore whose coreset comes from :func:`kdanomaly.memory.k_center_greedy` (no random projection)."""

    def fit(self) -> None:
        """Reduce the stored patch embeddings to ``coreset_sampling_ratio`` of them."""
        if not self.model.embedding_store:
            raise ValueError("no patch embeddings were stored: Patchcore saw no training images")
        bank = torch.vstack(self.model.embedding_store)
        self.model.embedding_store.clear()
        size = max(1, int(len(bank) * self.coreset_sampling_ratio))
        self.model.memory_bank = bank[k_center_greedy(bank, size)]
