"""Reading the images a line camera writes: 8- or 16-bit, gray, RGB, palette or with alpha; PNG, JPEG, BMP, TIFF.

Pillow decodes strictly: a truncated, empty or foreign file raises :class:`UnreadableImageError` naming the file and
the reason instead of coming back half-decoded. 16-bit colour is read at Pillow's 8-bit precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class UnreadableImageError(ValueError):
    """A file that cannot be read as an image; the message names it and says why."""


def _as_rgb(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` from a decoded Pillow image of any mode: uint8 for 8-bit sources, float32 in [0, 1] for 16-bit
    and floating-point ones."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":  # 16-bit gray (Pillow opens some as 32-bit "I")
        gray = torch.from_numpy(np.array(image, dtype=np.float32) / 65535).clamp_(0, 1)
        return gray.expand(3, -1, -1).contiguous()
    if image.mode == "F":
        gray = torch.from_numpy(np.array(image, dtype=np.float32)).clamp_(0, 1)
        return gray.expand(3, -1, -1).contiguous()
    return torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB"))).permute(2, 0, 1)


def as_unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """:func:`read_pixels`' result as float32 in [0, 1]."""
    return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as float32 ``(3, H, W)`` RGB in [0, 1]: gray repeated, 16-bit scaled by 65535, alpha dropped.

    Raises:
        UnreadableImageError: missing, unreadable, empty, truncated or not an image.
    """
    return as_unit_float(read_pixels(path))


def read_pixels(path: str | Path) -> torch.Tensor:
    """As :func:`read_image`, but 8-bit sources stay uint8 ``(3, H, W)`` (the display copy needs no round trip)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                raise UnreadableImageError(f"cannot read image {path}: it has no pixels")
            return _as_rgb(image)
    except UnreadableImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error) or type(error).__name__
        raise UnreadableImageError(f"cannot read image {path}: {reason}") from error
