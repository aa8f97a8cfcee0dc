"""Atomic, versioned, checksummed files for the prototype memory.

Layout: ``MAGIC``, then little-endian ``version (u32)``, ``header length (u64)``, ``payload length (u64)``, the
JSON header, the binary payload, and the SHA-256 of everything before it. A file is read whole and checked before
anything is built from it, so a truncated, corrupted or foreign file is rejected and never half-loaded. Writing
goes to a temporary file in the same folder, which is flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from kdanomaly.files import write_bytes_atomic

MAGIC = b"KDANOMALY-PROTOTYPE-MEMORY\n"
FORMAT_VERSION = 2  # 2: labels as codes in the payload, per-class sums, faiss ids; 1 is still read
READABLE_VERSIONS = (1, 2)
_LENGTHS = struct.Struct("<IQQ")
_DIGEST_SIZE = 32


class MemoryFileError(ValueError):
    """A memory file that cannot be read: not one of ours, another version, truncated or corrupted."""


def write_atomic(path: str | os.PathLike[str], header: dict[str, Any], payload: bytes) -> None:
    """Write ``header`` (JSON-serialisable) and ``payload`` to ``path`` atomically."""
    encoded = json.dumps(header).encode()
    body = MAGIC + _LENGTHS.pack(FORMAT_VERSION, len(encoded), len(payload)) + encoded + payload
    write_bytes_atomic(path, body + hashlib.sha256(body).digest())


def read_checked(path: str | os.PathLike[str]) -> tuple[int, dict[str, Any], bytes]:
    """Version, header and payload of a file written by :func:`write_atomic`; :class:`MemoryFileError` if it is
    not sound."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise MemoryFileError(f"{path} is not a kdanomaly prototype memory file")
    fixed_end = len(MAGIC) + _LENGTHS.size
    if len(data) < fixed_end:
        raise MemoryFileError(f"{path} is truncated ({len(data)} bytes)")
    version, header_length, payload_length = _LENGTHS.unpack(data[len(MAGIC) : fixed_end])
    if version not in READABLE_VERSIONS:
        raise MemoryFileError(f"{path} has format version {version}; this kdanomaly reads versions {READABLE_VERSIONS}")
    expected = fixed_end + header_length + payload_length + _DIGEST_SIZE
    if len(data) != expected:
        raise MemoryFileError(f"{path} is truncated or has trailing bytes ({len(data)} bytes, expected {expected})")
    body = data[:-_DIGEST_SIZE]
    if hashlib.sha256(body).digest() != data[-_DIGEST_SIZE:]:
        raise MemoryFileError(f"{path} is corrupted (checksum mismatch)")
    header = json.loads(body[fixed_end : fixed_end + header_length])
    return version, header, body[fixed_end + header_length :]
