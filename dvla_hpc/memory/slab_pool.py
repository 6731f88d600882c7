"""Dynamic pool: fixed-size slabs, preallocated once, recycled by slot id."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from dvla_hpc.memory.accounting import DATA_PATH

ALIGN = 64


@dataclass(frozen=True)
class SlabField:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class SlabLayout:
    """Named, typed, aligned fields inside one flat byte slab (what a slot holds and what goes on the wire)."""

    def __init__(self, kind: str, fields: list[tuple[str, type | str, tuple[int, ...]]]):
        self.kind = kind
        self.fields: dict[str, SlabField] = {}
        offset = 0
        for name, dtype, shape in fields:
            f = SlabField(name, np.dtype(dtype), tuple(shape), offset)
            self.fields[name] = f
            offset += -(-f.nbytes // ALIGN) * ALIGN
        self.nbytes = offset

    def views(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """Every field of one slab's bytes `raw` (nbytes,)."""
        return {name: self.across(raw[None], name)[0] for name in self.fields}

    def across(self, raw: np.ndarray, name: str) -> np.ndarray:
        """One field of every slab of `raw` (slabs, nbytes): a (slabs, *shape) view, indexed by slot."""
        f = self.fields[name]
        return raw[:, f.offset: f.offset + f.nbytes].view(f.dtype).reshape(len(raw), *f.shape)


class SlabPool:
    def __init__(self, layout: SlabLayout, count: int):
        if count < 1:
            raise ValueError(f"slab pool {layout.kind} needs at least one slot")
        self.layout = layout
        self.count = count
        self.raw = DATA_PATH.host_bytes(f"slabs/{layout.kind}", (count, layout.nbytes))
        self.slots = [layout.views(self.raw[i]) for i in range(count)]
        self.fields = {name: layout.across(self.raw, name) for name in layout.fields}  # [slot, ...]
        self._free = list(range(count - 1, -1, -1))
        self._cond = threading.Condition()
        self.high_water = 0

    @property
    def in_use(self) -> int:
        return self.count - len(self._free)

    def acquire(self, timeout: float | None = None) -> int | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._free, timeout):
                return None
            slot = self._free.pop()
            self.high_water = max(self.high_water, self.count - len(self._free))
            return slot

    def release(self, slot: int) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()

    def stats(self) -> dict:
        return {"slots": self.count, "slab_bytes": self.layout.nbytes, "high_water": self.high_water}
