"""Prototype-memory benchmarks: coreset build time against Anomalib's sampler, approximate search against flat.

    python -m benchmarks.memory_speed --mvtec ../shared/datasets/mvtec_ad --out benchmarks/results/memory_speed.json

1. Coreset: 200 000 x 384 teacher patch features (tf_efficientnet_lite0 blocks.2 + blocks.1 + blocks.6, 3x3
   averaged, of the MVTec bottle training images at 256 px: 32x32 patches each, 196 images), a 1 % coreset
   (2 000 picks), our pruned greedy k-center against Anomalib Patchcore's ``KCenterGreedy`` (random
   projection + plain greedy), one process, one after the other. Also the covering radius each coreset
   achieves on the full features.
2. Search: 1 000 000 x 128 random unit vectors, 1 000 queries, top-1: flat (exact) against IVF and HNSW —
   build time, ms per query (batch of 1 000) and recall@1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from anomalib.models.components.sampling import KCenterGreedy
from torch.nn import functional as F
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resize

from benchmarks.report import machine
from kdanomaly.memory import PrototypeMemory, k_center_greedy
from kdanomaly.models.components import TimmFeatures

LAYERS = ["blocks.2", "blocks.1", "blocks.6"]  # 40 + 24 + 320 = 384 channels, on the blocks.2 grid


@torch.no_grad()
def patch_features(image_dir: Path, count: int, size: int = 256) -> torch.Tensor:
    """``count`` 384-dim teacher patch features (3x3-averaged, on the blocks.2 grid) of the images in a folder."""
    teacher = TimmFeatures("tf_efficientnet_lite0", LAYERS, pretrained=True).eval()
    patches, total = [], 0
    for path in sorted(image_dir.glob("*.png")):
        image = resize(decode_image(str(path), mode=ImageReadMode.RGB).float() / 127.5 - 1, [size, size])
        features = teacher(image[None])
        grid = features[LAYERS[0]].shape[-2:]
        stacked = torch.cat(
            [F.interpolate(F.avg_pool2d(f, 3, 1, 1), size=grid, mode="bilinear") for f in features.values()], dim=1
        )
        patches.append(stacked[0].flatten(1).T)
        total += len(patches[-1])
        if total >= count:
            break
    return torch.cat(patches)[:count].contiguous()


def covering_radius(features: torch.Tensor, picks: torch.Tensor, chunk: int = 20_000) -> float:
    """Largest distance of any feature to its nearest pick (what k-center minimises)."""
    centres = features[picks]
    return max(
        float(torch.cdist(features[i : i + chunk], centres).amin(1).max()) for i in range(0, len(features), chunk)
    )


def coreset_comparison(features: torch.Tensor, ratio: float) -> dict[str, object]:
    """Time both samplers on the same features; their picks' covering radius."""
    size = int(len(features) * ratio)
    torch.manual_seed(0)
    started = time.perf_counter()
    anomalib_picks = torch.tensor(KCenterGreedy(features, sampling_ratio=ratio).select_coreset_idxs())
    anomalib_seconds = time.perf_counter() - started
    started = time.perf_counter()
    our_picks = k_center_greedy(features, size, start=int(anomalib_picks[0]))
    our_seconds = time.perf_counter() - started
    return {
        "features": list(features.shape),
        "coreset_size": size,
        "anomalib_kcenter_seconds": round(anomalib_seconds, 2),
        "kdanomaly_kcenter_seconds": round(our_seconds, 2),
        "speedup": round(anomalib_seconds / our_seconds, 1),
        "anomalib_covering_radius": round(covering_radius(features, anomalib_picks), 4),
        "kdanomaly_covering_radius": round(covering_radius(features, our_picks), 4),
    }


def search_comparison(n: int, dim: int, n_queries: int, k: int = 1) -> dict[str, object]:
    """Build time, latency and recall@k of IVF and HNSW (at several search efforts) against the flat index."""
    rng = np.random.default_rng(0)
    references = rng.normal(size=(n, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    results: dict[str, object] = {"references": [n, dim], "queries": n_queries}
    efforts = {"flat": [{}], "ivf": [{"ivf_probes": p} for p in (16, 64, 256)],
               "hnsw": [{"hnsw_search_depth": d} for d in (64, 256, 1024)]}  # fmt: skip
    exact = None
    for kind, settings in efforts.items():
        memory = PrototypeMemory(dim, index=kind)
        started = time.perf_counter()
        memory.add(references, ["x"] * n)
        memory.search(queries[:1], k)  # builds (and trains) the index
        rows: dict[str, object] = {"build_seconds": round(time.perf_counter() - started, 2)}
        for setting in settings:
            memory.tune(**setting)
            started = time.perf_counter()
            ids = memory.search(queries, k).ids
            latency = (time.perf_counter() - started) / n_queries * 1000
            exact = ids if exact is None else exact
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact, strict=True)]))
            name = ",".join(f"{key}={value}" for key, value in setting.items()) or "exact"
            rows[name] = {"ms_per_query": round(latency, 3), f"recall@{k}": recall}
        results[kind] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mvtec", type=Path, required=True, help="MVTec AD root (bottle training images)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patches", type=int, default=200_000)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    args = parser.parse_args()
    features = patch_features(args.mvtec / "bottle" / "train" / "good", args.patches)
    report = {
        "machine": machine(),
        "coreset": coreset_comparison(features, args.ratio),
        "search": search_comparison(args.vectors, 128, 1000),
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
