"""Needle-in-a-haystack prompts: a haystack from one calibration corpus, a needle at a depth, the
question, the chat template (or, for a base model without one, "Question: ...\nAnswer:"); and
where the needle's tokens are."""

from __future__ import annotations

from kvd_transformers.calibrate.needles import Needle
from kvd_transformers.calibrate.texts import haystack


def wrap(tokenizer, body: str, question: str = "") -> str:
    """``body`` and ``question`` as a user turn with the generation prompt; without a chat template
    (a base model) plain text ending in ``"Question: ...\\nAnswer:"`` so the model answers next."""
    if getattr(tokenizer, "chat_template", None):
        text = f"{body}\n\n{question}" if question else body
        return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    if question:
        return f"{body}\n\nQuestion: {question}\nAnswer:"
    return body + "\n"


def build(tokenizer, needle: Needle, tokens: int, depth: float, seed: int, corpus: str = "pydoc"):
    """``(input_ids [1, n], (start, end))``: a prompt of about ``tokens`` tokens with ``needle.fact``
    between paragraphs of ``corpus`` at ``depth`` (0 = start, 1 = end), and the needle's token
    span."""
    import torch

    overhead = len(tokenizer(wrap(tokenizer, f"{needle.fact}\n\n", needle.question)).input_ids)
    paras = haystack(tokenizer, max(16, tokens - overhead), seed, corpus)
    at = min(len(paras), max(0, round(depth * len(paras))))
    body = "\n\n".join(paras[:at] + [needle.fact] + paras[at:])
    text = wrap(tokenizer, body, needle.question)
    enc = tokenizer(text, return_offsets_mapping=True)
    a = text.index(needle.fact)
    b = a + len(needle.fact)
    inside = [i for i, (s, e) in enumerate(enc.offset_mapping) if e > a and s < b and e > s]
    if not inside:
        raise RuntimeError("needle tokens not found in the prompt (tokenizer without offsets?)")
    return torch.tensor([enc.input_ids]), (inside[0], inside[-1] + 1)
