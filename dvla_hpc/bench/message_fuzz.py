"""Malformed messages, counted: control messages, slab headers and sizes, and weight-tree headers,
each corrupted at random in one of several ways and handed to the check that guards it on a
receiving rank. Every one must be refused with the error that names it: none accepted, none
ending in another exception. (tests/test_mpi_planes.py sends such messages between real ranks.)"""
from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from dvla_hpc.memory.layouts import HEADER_WORDS, H, MAGIC, SlabError, SlabKind, stamp, validate
from dvla_hpc.planes.control import MESSAGE, ControlError, Kind, Message, decode, encode
from dvla_hpc.planes.data_pump import check_size
from dvla_hpc.planes.tree_header import BroadcastError, check_header, write_header

ORIGIN = "rank 7"
MAX_COUNT = 16


@dataclass
class FuzzCount:
    target: str
    corruption: str
    trials: int = 0
    refused: int = 0  # with the guard's own error, naming the sender
    accepted: int = 0
    crashed: int = 0  # any other exception
    example: str = ""

    @property
    def survived(self) -> bool:
        return self.accepted == 0 and self.crashed == 0


def control_message(rng: random.Random) -> np.ndarray:
    buf = np.zeros(1, dtype=MESSAGE)
    encode(Message(rng.choice(list(Kind)), rng.randrange(4096), version=rng.randrange(1 << 20),
                   step=rng.randrange(1 << 20), values=tuple(rng.random() for _ in range(3))), buf)
    return buf


def control_cases(rng: random.Random) -> dict[str, Callable[[], None]]:
    def flipped() -> None:
        buf = control_message(rng)
        raw = buf.view(np.uint8)
        bit = rng.randrange(raw.size * 8)
        raw[bit // 8] ^= np.uint8(1 << (bit % 8))
        decode(buf, 7)

    def unknown_kind() -> None:
        buf = control_message(rng)
        buf[0]["kind"] = rng.choice([0, 8, 99, 2**31])
        buf[0]["checksum"] = 0
        buf[0]["checksum"] = zlib.crc32(buf.tobytes())  # sealed: only the kind is wrong
        decode(buf, 7)

    def wrong_size() -> None:
        decode(control_message(rng), 7, rng.choice([0, 1, MESSAGE.itemsize - 4, MESSAGE.itemsize + 8]))

    return {"bit flipped": flipped, "unknown kind": unknown_kind, "wrong size": wrong_size}


def slab_cases(rng: random.Random) -> dict[str, Callable[[], None]]:
    def header() -> np.ndarray:
        h = np.zeros(HEADER_WORDS, dtype=np.int64)
        stamp(h, SlabKind.OBSERVATIONS)
        h[H.COUNT] = rng.randint(1, MAX_COUNT)
        return h

    def bad_magic() -> None:
        h = header()
        h[H.MAGIC] = rng.choice([0, MAGIC + 1, -1, rng.randrange(1 << 62)])
        validate(h, SlabKind.OBSERVATIONS, MAX_COUNT, ORIGIN)

    def bad_kind() -> None:
        h = header()
        h[H.KIND] = rng.choice([k for k in SlabKind if k != SlabKind.OBSERVATIONS] + [0, 77])
        validate(h, SlabKind.OBSERVATIONS, MAX_COUNT, ORIGIN)

    def bad_count() -> None:
        h = header()
        h[H.COUNT] = rng.choice([0, -1, MAX_COUNT + 1, 1 << 40])
        validate(h, SlabKind.OBSERVATIONS, MAX_COUNT, ORIGIN)

    def truncated_or_long() -> None:
        expected = rng.randrange(1024, 1 << 22)
        check_size(expected + rng.choice([-expected, -1, 1, expected]), expected, ORIGIN)

    return {"bad magic": bad_magic, "wrong kind": bad_kind, "count out of range": bad_count,
            "truncated or long": truncated_or_long}


def tree_cases(rng: random.Random) -> dict[str, Callable[[], None]]:
    nbytes, chunk = 4 << 20, 1 << 16
    chunks = -(-nbytes // chunk)

    def header() -> np.ndarray:
        h = np.zeros(8, dtype=np.int64)
        write_header(h, rng.randrange(1, 1000), nbytes, chunks, chunk)
        return h

    def field_flipped() -> None:  # in transit: the header's own checksum no longer matches
        h = header()
        field = rng.randrange(1, 7)
        h[field] ^= np.int64(1 << rng.randrange(62))
        check_header(h, ORIGIN, nbytes, chunks, chunk)

    def wrong_buffer() -> None:  # well formed, but for another buffer size or chunking
        h = np.zeros(8, dtype=np.int64)
        size, count = rng.choice([(nbytes - 4, chunks), (nbytes * 2, chunks * 2), (nbytes, chunks + 1)])
        write_header(h, 1, size, count, chunk)
        check_header(h, ORIGIN, nbytes, chunks, chunk)

    def bad_magic() -> None:
        h = header()
        h[0] = rng.randrange(1 << 62)
        check_header(h, ORIGIN, nbytes, chunks, chunk)

    return {"field flipped": field_flipped, "another buffer": wrong_buffer, "bad magic": bad_magic}


TARGETS = {"control message": (control_cases, ControlError, "rank 7"),
           "data slab": (slab_cases, SlabError, ORIGIN),
           "weight-tree header": (tree_cases, BroadcastError, ORIGIN)}


def fuzz_messages(trials: int, seed: int = 0) -> list[FuzzCount]:
    rng = random.Random(seed)
    counts = []
    for target, (cases, error, name) in TARGETS.items():
        for corruption, case in cases(rng).items():
            count = FuzzCount(target, corruption)
            for _ in range(trials):
                count.trials += 1
                try:
                    case()
                except error as err:
                    if name in str(err):
                        count.refused += 1
                        count.example = count.example or str(err)
                    else:
                        count.crashed += 1
                except Exception as err:  # noqa: BLE001 - counted: what the guard let through
                    count.crashed += 1
                    count.example = f"{type(err).__name__}: {err}"
                else:
                    count.accepted += 1
            counts.append(count)
    return counts


def message_report(counts: list[FuzzCount]) -> list[dict]:
    for c in counts:
        print(f"  {c.target:<19} {c.corruption:<19} {c.refused:>6}/{c.trials} refused, "
              f"{c.accepted} accepted, {c.crashed} other errors   e.g. {c.example[:70]}")
    return [{**asdict(c), "survived": c.survived} for c in counts]
