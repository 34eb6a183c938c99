"""Prompts from the license texts in /usr/share/common-licenses (the calibration tools use
pydoc_data.topics, so the report never sees calibration text).

* KL prompts: ``length`` plain-text tokens and the ``CONTINUATION`` tokens that follow them.
* Needle prompts: license text with a number fact at a depth, a question, in the chat template.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

LICENSES = Path("/usr/share/common-licenses")
CONTINUATION = 32
QUESTION = "What is the secret vault code mentioned in the text above? Answer with the number."
FACT = "Note for the reader: the secret vault code is {}."
NEEDLE_OFFSET = 20000  # needle prompts read the corpus from here, KL prompts from the start


def corpus_ids(tok) -> list:
    """Token ids of every license file (symlinked duplicates once), in name order."""
    seen, texts = set(), []
    for p in sorted(LICENSES.iterdir()):
        real = p.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        texts.append(real.read_text(errors="replace").strip())
    return tok("\n\n".join(texts)).input_ids


def _slice(ids: list, start: int, n: int) -> list:
    start %= max(len(ids) - n, 1)
    return ids[start:start + n]


def kl_prompt(ids: list, length: int):
    """``(prompt [1, length], continuation [1, CONTINUATION])``."""
    span = _slice(ids, 0, length + CONTINUATION)
    return (torch.tensor([span[:length]]), torch.tensor([span[length:]]))


def needle_number(length: int, depth: float) -> str:
    return str(random.Random(f"{length}/{depth:g}").randint(1000, 9999))


def needle_prompt(tok, ids: list, length: int, depth: float):
    """``(prompt [1, ~length], answer)``: the fact after ``depth`` of the text."""
    answer = needle_number(length, depth)
    fact = FACT.format(answer)
    wrap = lambda body: tok.apply_chat_template(
        [{"role": "user", "content": body}], add_generation_prompt=True, tokenize=False)
    overhead = len(tok(wrap(f"\n\n{fact}\n\n\n\n{QUESTION}")).input_ids)
    text_tokens = max(length - overhead, 16)
    text = _slice(ids, NEEDLE_OFFSET, text_tokens)
    cut = int(round(depth * text_tokens))
    body = f"{tok.decode(text[:cut]).strip()}\n\n{fact}\n\n{tok.decode(text[cut:]).strip()}\n\n{QUESTION}"
    return tok(wrap(body), return_tensors="pt").input_ids, answer
