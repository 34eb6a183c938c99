"""Calibration text that ships with CPython: ``pydoc_data.topics`` (the help() topic pages).

The quality report builds its haystacks from ``/usr/share/common-licenses``; calibrating on other
text keeps the two apart.
"""

from __future__ import annotations

import random
import re


def topics() -> list[tuple[str, str]]:
    """``(name, text)`` of every pydoc topic, sorted by name, whitespace tidied."""
    from pydoc_data.topics import topics as table

    out = []
    for name in sorted(table):
        text = re.sub(r"[ \t]+", " ", table[name])
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        if text:
            out.append((name, text))
    return out


def paragraphs(seed: int) -> list[str]:
    """All topic paragraphs (of at least 80 characters), shuffled with ``seed``."""
    paras = [p.strip() for _, t in topics() for p in t.split("\n\n") if len(p.strip()) >= 80]
    random.Random(seed).shuffle(paras)
    return paras


def haystack(tokenizer, tokens: int, seed: int) -> list[str]:
    """Paragraphs from a seeded shuffle, about ``tokens`` tokens in total (the last one cut)."""
    out, n = [], 0
    for p in paragraphs(seed):
        ids = tokenizer(p, add_special_tokens=False).input_ids
        if n + len(ids) > tokens:
            rest = tokens - n
            if rest > 8:
                out.append(tokenizer.decode(ids[:rest]).strip())
            break
        out.append(p)
        n += len(ids)
    return out


def calibration_ids(tokenizer, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """``count`` token-id lists of exactly ``length`` tokens: the start of distinct topics (seeded
    choice among the topics that are long enough). Raises ValueError if too few are."""
    long_enough = []
    for _, text in topics():
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) >= length:
            long_enough.append(ids[:length])
    if len(long_enough) < count:
        raise ValueError(f"pydoc_data.topics has only {len(long_enough)} topics of >= {length} "
                         f"tokens; ask for fewer texts or shorter ones")
    random.Random(seed).shuffle(long_enough)
    return long_enough[:count]
