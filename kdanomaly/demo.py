"""The main job on the embedded default: synthesise a surface data set, train KDAnomaly, test, visualise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from kdanomaly.data.synthetic import generate_synthetic_dataset
from kdanomaly.models import KDAnomaly


def run_demo(
    out: str | Path = "results/demo",
    category: str = "weave",
    image_size: int = 256,
    epochs: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Train and test KDAnomaly on synthetic textures; print AUROCs and where the heat-map overlays are."""
    out = Path(out)
    started = time.perf_counter()
    data_root = out / "data"
    generate_synthetic_dataset(data_root, category=category, image_size=image_size, seed=seed)
    seed_everything(seed, workers=True)
    datamodule = MVTecAD(root=data_root, category=category, train_batch_size=8, eval_batch_size=16, num_workers=2)
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor(image_size=(image_size, image_size)))
    engine = Engine(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=out,
        logger=False,
        deterministic="warn",
    )
    engine.fit(model, datamodule=datamodule)
    metrics = {name: float(value) for name, value in engine.test(model, datamodule=datamodule)[0].items()}
    images = sorted((out / "KDAnomaly").glob(f"*/{category}/latest/images"))
    print(f"\nKDAnomaly on synthetic '{category}' ({image_size}px, {epochs} epochs, seed {seed}):")
    print(f"  image AUROC {metrics['image_AUROC']:.4f}   pixel AUROC {metrics['pixel_AUROC']:.4f}")
    print(f"  heat-map overlays: {images[0] if images else 'none written'}")
    # Lightning types checkpoint_callback as the Checkpoint base class; it is the Engine's ModelCheckpoint.
    checkpoint_callback = cast(ModelCheckpoint, engine.trainer.checkpoint_callback)
    print(f"  checkpoint:        {checkpoint_callback.best_model_path or 'none'}")
    print(f"  wall time {time.perf_counter() - started:.0f} s")
    return metrics
