"""Append-only JSON-lines metrics log: one object per line, each line flushed as soon as it is logged,
so a crash leaves complete lines plus at most one partial last line."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any


def to_json_value(value: Any) -> Any:
    """json.dumps `default` hook: numpy/torch scalars and arrays become plain Python values."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _repair_last_line(path: Path) -> None:
    """Make the file end with a newline: terminate a complete last record, drop a partial one."""
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        end = size
        while end > 0:  # find the start of the last line, scanning backwards in blocks
            start = max(0, end - 65536)
            file.seek(start)
            newline = file.read(end - start).rfind(b"\n")
            if newline >= 0:
                line_start = start + newline + 1
                break
            end = start
        else:
            line_start = 0
        if line_start == size:
            return
        file.seek(line_start)
        if _is_json_object(file.read()):
            file.write(b"\n")
        else:
            file.truncate(line_start)


class MetricsLog:
    def __init__(self, path: Path, fsync: bool = False) -> None:
        """fsync=True also survives power loss, at the cost of a disk sync per line."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_last_line(self.path)
        self._fsync = fsync
        self._file = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=to_json_value)
        self._file.write(line + "\n")
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records; a partial final line (crash mid-write) is ignored, a bad line elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: metrics log does not exist")
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records: list[dict[str, Any]] = []
    last = len(lines) - 1  # after the final "\n" this is "", otherwise the partial line
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == last:
                break
            raise ValueError(f"{path}: line {number + 1} is not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number + 1} is not a JSON object")
        records.append(record)
    return records
