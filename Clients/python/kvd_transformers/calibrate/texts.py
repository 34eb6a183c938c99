"""Calibration text that ships with CPython: ``pydoc_data.topics`` (the help() topic pages) and the
docstrings of a fixed list of standard-library modules.

The quality report builds its haystacks from ``/usr/share/common-licenses`` and transformers/torch
docstrings; calibrating on other text keeps them apart. The standard-library modules are split in
two disjoint lists: ``CALIB_MODULES`` feed the HeadKV calibration, ``DEV_MODULES`` only its
held-apart dev set (:mod:`kvd_transformers.calibrate.devset`).
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


CALIB_MODULES = ("argparse", "codecs", "collections", "configparser", "csv", "functools",
                 "hashlib", "http.client", "io", "itertools", "json", "logging", "optparse", "os",
                 "platform", "random", "re", "shutil", "socket", "statistics", "subprocess",
                 "tempfile", "textwrap", "threading", "timeit", "traceback", "turtle",
                 "urllib.parse")
DEV_MODULES = ("contextlib", "dataclasses", "decimal", "difflib", "email.message", "enum",
               "imaplib", "inspect", "ipaddress", "locale", "smtplib", "typing", "uuid", "wave")
CORPORA = ("pydoc", "stdlib", "dev")


def module_docs(names) -> list[tuple[str, str]]:
    """``(name, text)``: each module's docstring and those of its public members defined in it
    (name order), whitespace tidied. A module that fails to import is skipped."""
    import importlib
    import inspect
    import warnings

    out = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except Exception:  # an optional module missing from this Python build
            continue
        docs = [inspect.getdoc(mod) or ""]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated members (typing.io) warn when read
            for attr, obj in sorted(vars(mod).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                    continue
                docs.append(inspect.getdoc(obj) or "")
        text = "\n\n".join(d for d in docs if d)
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        if text:
            out.append((name, text))
    return out


def _corpus(name: str) -> list[tuple[str, str]]:
    if name == "pydoc":
        return topics()
    if name == "stdlib":
        return module_docs(CALIB_MODULES)
    if name == "dev":
        return module_docs(DEV_MODULES)
    raise ValueError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")


_PARAS: dict = {}


def paragraphs(seed: int, corpus: str = "pydoc") -> list[str]:
    """All paragraphs (of at least 80 characters) of ``corpus``, shuffled with ``seed``."""
    if corpus not in _PARAS:
        _PARAS[corpus] = [p.strip() for _, t in _corpus(corpus) for p in t.split("\n\n")
                          if len(p.strip()) >= 80]
        if corpus == "dev":
            # inspect.getdoc gives a class without a docstring its base class's, which may be a
            # calibration module's: the dev text keeps none of the calibration's paragraphs.
            seen = set(paragraphs(0, "stdlib"))
            _PARAS[corpus] = [p for p in _PARAS[corpus] if p not in seen]
    paras = list(_PARAS[corpus])
    random.Random(seed).shuffle(paras)
    return paras


def haystack(tokenizer, tokens: int, seed: int, corpus: str = "pydoc") -> list[str]:
    """Paragraphs of ``corpus`` from a seeded shuffle, about ``tokens`` tokens in total (the last
    one cut)."""
    out, n = [], 0
    for p in paragraphs(seed, corpus):
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
