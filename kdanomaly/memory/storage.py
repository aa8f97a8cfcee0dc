"""Atomic, versioned, checksummed files for the vector store and the prototype memory.

Layout: ``MAGIC``, then little-endian ``version (u32)``, ``header length (u64)``, ``payload length (u64)``, the
JSON header, the binary payload, and the SHA-256 of everything before it. A file is read whole and checked before
anything is built from it, so a truncated, corrupted or foreign file is rejected and never half-loaded. Writing
goes to a temporary file in the same folder, which is flushed, fsynced and renamed over the target. The payload is
named arrays (their byte sizes in the header's ``sections``, in order) followed by the serialised faiss index.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

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


def save(
    path: str | os.PathLike[str], header: dict[str, Any], sections: Mapping[str, np.ndarray], index: faiss.Index | None
) -> None:
    """Write ``header``, the arrays of ``sections`` in order and ``index`` (if any) to ``path`` atomically."""
    header = header | {"sections": {name: array.nbytes for name, array in sections.items()}}
    index_bytes = faiss.serialize_index(index).tobytes() if index is not None else b""
    write_atomic(path, header, b"".join(array.tobytes() for array in sections.values()) + index_bytes)


def load(
    path: str | os.PathLike[str], dtypes: Mapping[str, type]
) -> tuple[int, dict[str, Any], dict[str, np.ndarray], faiss.Index | None]:
    """Version, header, the sections named in ``dtypes`` (others skipped) and the index of a file that :func:`save`
    wrote; a version-1 file's full vectors come as section ``vectors``. :class:`MemoryFileError` if unsound."""
    version, header, payload = read_checked(path)
    sections: dict[str, np.ndarray] = {}
    try:
        if version == 1:
            start = header["embedding_bytes"]
            sections["vectors"] = np.frombuffer(payload[:start], dtype=np.float32).copy()
        else:
            start = 0
            for name, size in header["sections"].items():
                if name in dtypes:
                    sections[name] = np.frombuffer(payload[start : start + size], dtype=dtypes[name]).copy()
                start += size
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MemoryFileError(f"{path} has an unreadable header: {error}") from error
    index = faiss.deserialize_index(np.frombuffer(payload[start:], dtype=np.uint8)) if start < len(payload) else None
    return version, header, sections, index
