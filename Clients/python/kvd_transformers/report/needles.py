"""Needle prompts for the statistics grid: many prompts per (kind, length), each with its own
haystack offset, depth and answer, all deterministic in a seed.

Kinds:

* ``numbers``: the license corpus of :mod:`.prompts` (``/usr/share/common-licenses``) with a
  4-digit vault code. Correct when the answer holds the code as a whole digit run.
* ``places``: the docstrings of the ``torch.nn`` classes (present wherever the report runs, since
  the report needs torch; neither the licenses nor the calibration corpora ``pydoc_data.topics``
  and standard-library docstrings) with a hidden-object fact, e.g. "The spare key is hidden
  inside the basket in Ghent."; the question asks for the object or the city, one word. Correct
  when the expected word appears in the answer as a whole word, case-insensitive.

Entity words (cities, hiding places, hidden items) start with A–L only and none appears in
``kvd_transformers.calibrate.needles``, whose names use other words (and whose new entities use
M–Z), so a calibration prompt never holds a report answer.

Prompt format: the tokenizer's chat template when it has one (SmolLM2-Instruct), plain text
``"…\\n\\nQuestion: …\\nAnswer:"`` otherwise (base models such as Gemma-3-270M).
"""

from __future__ import annotations

import inspect
import random
import re
from dataclasses import dataclass

KINDS = ("numbers", "places")
DEPTH_LO, DEPTH_HI = 0.05, 0.95

CITIES = ["Aarhus", "Antwerp", "Athens", "Bergen", "Bruges", "Cairo", "Calgary", "Cork", "Delft",
          "Dresden", "Dublin", "Edinburgh", "Florence", "Geneva", "Ghent", "Glasgow", "Graz",
          "Hamburg", "Helsinki", "Istanbul", "Jakarta", "Kyoto", "Leipzig", "Lyon"]
SPOTS = ["anvil", "barrel", "basket", "bookshelf", "bucket", "cabinet", "cupboard", "drawer",
         "flowerpot", "fountain", "globe", "hatbox", "jukebox", "kettle", "ladder", "lantern"]
ITEMS = ["amulet", "bracelet", "compass", "diary", "emerald", "flute", "gold coin", "harmonica",
         "locket", "ledger", "letter", "clock"]
PREPOSITIONS = ["under", "inside", "behind"]

NUMBER_FACT = "Note for the reader: the secret vault code is {}."
NUMBER_QUESTION = "What is the secret vault code mentioned in the text above? Answer with the number."


@dataclass(frozen=True)
class Needle:
    kind: str
    index: int
    fact: str
    question: str
    answer: str
    depth: float    # share of the haystack before the fact
    offset: int     # haystack start in the corpus (tokens)


def entity_words() -> set:
    """Every answer-bearing word of the ``places`` kind (lower case)."""
    out = set()
    for w in CITIES + SPOTS + ITEMS:
        out.update(w.lower().split())
    return out


def places_corpus_text() -> str:
    """The ``torch.nn`` class docstrings, in name order (the places haystack)."""
    import torch.nn as nn

    docs = []
    for name in sorted(dir(nn)):
        obj = getattr(nn, name)
        if inspect.isclass(obj):
            d = inspect.getdoc(obj)
            if d:
                docs.append(d.strip())
    return "\n\n".join(docs)


def depths(n: int, seed: int, kind: str, length: int) -> list:
    """``n`` depths evenly spread over [0.05, 0.95], in a seeded order (every prompt its own)."""
    if n == 1:
        ds = [0.5]
    else:
        ds = [DEPTH_LO + (DEPTH_HI - DEPTH_LO) * i / (n - 1) for i in range(n)]
    random.Random(f"depths/{kind}/{length}/{seed}").shuffle(ds)
    return ds


def make_needle(kind: str, length: int, index: int, n: int, seed: int, corpus_len: int) -> Needle:
    """The ``index``-th of ``n`` needles of ``kind`` at ``length`` tokens."""
    if kind not in KINDS:
        raise ValueError(f"needle kind must be one of {KINDS}, got {kind!r}")
    rng = random.Random(f"needle/{kind}/{length}/{index}/{seed}")
    depth = depths(n, seed, kind, length)[index]
    offset = rng.randrange(0, max(corpus_len - length, 1))
    if kind == "numbers":
        code = str(rng.randint(1000, 9999))
        return Needle(kind, index, NUMBER_FACT.format(code), NUMBER_QUESTION, code, depth, offset)
    item, spot, city = rng.choice(ITEMS), rng.choice(SPOTS), rng.choice(CITIES)
    prep = rng.choice(PREPOSITIONS)
    fact = f"The {item} is hidden {prep} the {spot} in {city}."
    if index % 2 == 0:
        q, a = f"In which city is the {item} hidden? Answer with one word.", city
    else:
        q, a = f"What is the {item} hidden {prep}? Answer with one word.", spot
    return Needle(kind, index, fact, q, a, depth, offset)


def is_correct(needle: Needle, text: str) -> bool:
    """numbers: the code appears as a whole digit run; places: the word appears as a whole word
    (case-insensitive)."""
    if needle.kind == "numbers":
        return re.search(r"(?<![0-9])" + re.escape(needle.answer) + r"(?![0-9])", text) is not None
    return re.search(r"(?<![a-z])" + re.escape(needle.answer.lower()) + r"(?![a-z])",
                     text.lower()) is not None


def wrap(tok, body: str, question: str) -> str:
    """Chat template when the tokenizer has one, else plain text ending in ``Answer:``."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": f"{body}\n\n{question}"}],
                                       add_generation_prompt=True, tokenize=False)
    return f"{body}\n\nQuestion: {question}\nAnswer:"


def build(tok, corpus: list, needle: Needle, length: int):
    """``(ids [1, ~length] tensor, fact token position)``: ``length`` tokens in total (within a few
    tokens: decode/encode at the joins), the fact after ``depth`` of the haystack."""
    import torch

    overhead = len(tok(wrap(tok, f"\n\n{needle.fact}\n\n", needle.question)).input_ids)
    n_text = max(length - overhead, 16)
    start = needle.offset % max(len(corpus) - n_text, 1)
    text = corpus[start:start + n_text]
    cut = int(round(needle.depth * n_text))
    before = tok.decode(text[:cut]).strip()
    body = f"{before}\n\n{needle.fact}\n\n{tok.decode(text[cut:]).strip()}"
    s = wrap(tok, body, needle.question)
    ids = tok(s, return_tensors="pt").input_ids
    return ids, fact_position(tok, s, needle.fact)


def fact_position(tok, text: str, fact: str) -> int:
    """Token index where ``fact`` starts in ``text`` (for the depth check)."""
    return len(tok(text[:text.index(fact)]).input_ids)


def corpora(tok) -> dict:
    """Token ids of each kind's haystack."""
    from kvd_transformers.report.prompts import corpus_ids

    return {"numbers": corpus_ids(tok), "places": tok(places_corpus_text()).input_ids}
