"""Held-out text for judging a KVSharer map: spans of the license corpus the quality report reads
(``/usr/share/common-licenses``), at the DBudgetKV study's offsets — clear of the report's own KL
and needle prompts, and never seen by a calibration tool (which reads ``pydoc_data.topics``)."""

from __future__ import annotations

# Token offsets into the license corpus; the same spans as ``kvd_transformers.report.dbudget``.
OFFSETS = (8000, 28000, 36000, 44000)


def heldout_ids(tokenizer, tokens: int, offsets=OFFSETS) -> list[list[int]]:
    """One token-id list of exactly ``tokens`` tokens per offset. Raises ValueError if the corpus
    is too short for a span."""
    from kvd_transformers.report.prompts import corpus_ids

    ids = corpus_ids(tokenizer)
    out = []
    for start in offsets:
        if start + tokens > len(ids):
            raise ValueError(f"the license corpus has {len(ids)} tokens; no {tokens}-token span "
                             f"at {start}")
        out.append(ids[start:start + tokens])
    return out
