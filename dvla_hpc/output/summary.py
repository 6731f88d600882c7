"""The end-of-run summary: an atomically written JSON file and a plain-text table for the console."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dvla_hpc.output.atomic import atomic_write
from dvla_hpc.output.metrics_log import to_json_value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Temp file, fsync, rename: readers see the old summary or the new one, never a mix."""
    text = json.dumps(summary, indent=2, default=to_json_value) + "\n"
    atomic_write(Path(path), lambda file: file.write(text.encode("utf-8")))


def read_summary(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: summary file does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: summary is not valid JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: summary must be a JSON object")
    return summary


def flatten(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts become dotted keys: {"lanes": {"infer": {"busy": 0.9}}} -> [("lanes.infer.busy", 0.9)]."""
    rows: list[tuple[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _format_value(value: Any) -> str:
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # numpy/torch scalar
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{len(value)} entries: see summary.json]"
    return json.dumps(value, default=to_json_value)


def format_summary_table(summary: dict[str, Any]) -> str:
    rows = [(name, _format_value(value)) for name, value in flatten(summary)]
    if not rows:
        return ""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
