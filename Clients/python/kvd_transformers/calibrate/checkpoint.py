"""Checkpoints for interruptible calibration runs: a JSON file next to the output.

A checkpoint records the run's settings; ``--resume`` only continues a checkpoint whose settings
match the command line (otherwise the results would mix two different runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed (missing, unreadable, other settings)."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """``<out>.ckpt.json``, next to the output file."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt.json")


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temp file and rename (never a half-written file)."""
    write_text_atomic(path, json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load(path: Path, settings: dict, may_differ=()) -> dict:
    """The checkpoint state saved with ``settings``; CheckpointError if absent or different (keys in
    ``may_differ`` excepted: the caller checks those against the state)."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--resume: checkpoint {path} is unreadable ({e}); delete it") from None
    saved = data.get("settings")
    diff = sorted(k for k in set(saved or {}) | set(settings)
                  if (saved or {}).get(k) != settings.get(k) and k not in may_differ)
    if saved is None or diff:
        raise CheckpointError(f"--resume: checkpoint {path} was made with other settings "
                              f"({', '.join(diff)}); rerun with the same options or delete it")
    return data["state"]


def save(path: Path, settings: dict, state: dict) -> None:
    write_json_atomic(path, {"settings": settings, "state": state})


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
