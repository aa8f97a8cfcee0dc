"""LightningCLI of kdanomaly's own training commands (``fewshot train``, ``detect train``): ``--trainer.*``,
``--data.*``, ``--model.*`` and ``-c CONFIG.yaml`` as in ``anomalib train``, plus ``--out`` for the checkpoint.

The model's ``class_names`` come from the datamodule's ``classes`` (read from the data when it is built). Lightning's
DDP launcher re-runs the whole command line in every child process, so every process parses, builds and fits alike;
rank 0 alone writes the checkpoint and prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

QUIET_TRAINER = {"logger": False, "enable_checkpointing": False}  # the one checkpoint is --out


class TrainingCLI(LightningCLI):
    """Parse, then build the datamodule, the model and the trainer (no subcommand): :meth:`fit_and_save` trains.

    Bad input (a missing required option, a data folder without images, unknown classes) ends the command with a
    one-line error instead of a traceback.
    """

    def __init__(
        self,
        model_class: type[LightningModule],
        datamodule_class: type[LightningDataModule],
        prog: str,
        args: Sequence[str],
        trainer_defaults: Mapping[str, Any],
    ) -> None:
        super().__init__(
            model_class,
            datamodule_class,
            save_config_callback=None,
            trainer_defaults={**QUIET_TRAINER, **trainer_defaults},
            seed_everything_default=False,
            parser_kwargs={"prog": prog},
            args=list(args),
            run=False,
            auto_configure_optimizers=False,  # the models schedule their own
            load_from_checkpoint_support=False,  # plain hyperparameters: load_from_checkpoint(path) as before
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` only (they are the command line after ``kdanomaly <command> train``, not ``sys.argv``)."""
        self.config = parser.parse_args(cast(list[str], args))  # the list given to __init__

    def instantiate_classes(self) -> None:
        """Build as LightningCLI does; a ValueError of the data or the model ends the command with its message."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise SystemExit(f"{self.parser.prog}: error: {error}") from None

    def fit_and_save(self) -> Path:
        """Train, then write the checkpoint (rank 0 writes, every process takes part); its path."""
        self.trainer.fit(self.model, datamodule=self.datamodule)
        out = Path(self.config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.trainer.save_checkpoint(out)
        return out
