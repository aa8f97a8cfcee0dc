"""``--trainer.*`` options of our own training commands, named as in Anomalib's CLI: one set of flags scales every
model out (``--trainer.strategy ddp --trainer.devices N --trainer.num_nodes M``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_trainer_options(parser: argparse.ArgumentParser) -> None:
    """Lightning ``Trainer`` settings for distributed training."""
    group = parser.add_argument_group("devices and processes (Lightning Trainer, as Anomalib's --trainer.*)")
    group.add_argument("--trainer.accelerator", dest="accelerator", default="auto", help="cpu, gpu or auto")
    group.add_argument("--trainer.devices", dest="devices", default="auto", help="devices (processes) per node")
    group.add_argument("--trainer.num_nodes", dest="num_nodes", type=int, default=1, help="machines")
    group.add_argument("--trainer.strategy", dest="strategy", default="auto", help="auto, ddp, ...")


def trainer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Trainer`` keyword arguments of :func:`add_trainer_options`'s flags."""
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    return {"accelerator": args.accelerator, "devices": devices, "num_nodes": args.num_nodes, "strategy": args.strategy}
