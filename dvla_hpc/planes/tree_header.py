"""The header that starts every weight-tree transfer, on either data-plane backend: eight int64
words (magic, version, bytes, chunks, chunk bytes, payload CRC32 or 0, reserved, and the CRC32 of
the first seven), checked by every member before it trusts a byte of the payload."""
from __future__ import annotations

import zlib

import numpy as np

MAGIC = 0x44564C4154524545  # b"DVLATREE"
HEADER_FIELDS = 8


class BroadcastError(RuntimeError):
    """A broadcast header or payload failed validation."""


def write_header(h: np.ndarray, version: int, nbytes: int, n_chunks: int, chunk_bytes: int,
                 payload_crc: int = 0) -> None:
    h[:] = (MAGIC, version, nbytes, n_chunks, chunk_bytes, payload_crc, 0, 0)
    h[7] = zlib.crc32(h[:7].tobytes())


def check_header(h: np.ndarray, where: str, nbytes: int, n_chunks: int, chunk_bytes: int,
                 lowest_version: int = 0) -> int:
    """The version a received header announces; BroadcastError naming `where` if the header is
    corrupt or describes a buffer other than this member's."""
    if int(h[0]) != MAGIC:
        raise BroadcastError(f"{where} is corrupt: magic {int(h[0]):#x}, expected {MAGIC:#x}")
    if int(h[7]) != zlib.crc32(h[:7].tobytes()):
        raise BroadcastError(f"{where} is corrupt: its checksum does not match its fields")
    version, announced_bytes, announced_chunks, announced_chunk_bytes = (int(v) for v in h[1:5])
    if announced_bytes != nbytes:
        raise BroadcastError(f"{where} announces {announced_bytes} bytes but this member's buffer "
                             f"holds {nbytes}: every member needs the same buffer size")
    if announced_chunk_bytes != chunk_bytes or announced_chunks != n_chunks:
        raise BroadcastError(f"{where} announces {announced_chunks} chunks of {announced_chunk_bytes} "
                             f"bytes, this member expects {n_chunks} of {chunk_bytes}: "
                             f"every member must use the same chunk_bytes")
    if version < lowest_version:
        raise BroadcastError(f"{where} announces negative version {version}")
    return version
