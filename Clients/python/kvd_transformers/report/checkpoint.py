"""Finished rows as JSON lines: one line per (method, budget, length, depths), appended and flushed
as soon as a row is done, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kvd_transformers.report import interrupt


def row_key(label: str, budget, length: int, depths) -> str:
    return f"{label}|{budget}|{length}|{','.join(f'{d:g}' for d in depths)}"


def read_rows(path: Path) -> dict:
    """The finished rows of a JSON-lines file by their "key" ({} when there is no file)."""
    rows = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: recomputed
            rows[row["key"]] = row
    return rows


class Checkpoint:
    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.path.exists():
            self.path.unlink()
        self.rows = read_rows(self.path)

    def done(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        interrupt.check()  # a row finished after a stop was asked for does not land
        self.rows[row["key"]] = row
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def all_rows(self) -> list:
        return list(self.rows.values())
