"""Needle-in-a-haystack prompts: pydoc haystack, a needle at a depth, the question, the chat
template; and where the needle's tokens are."""

from __future__ import annotations

from kvd_transformers.calibrate.needles import Needle
from kvd_transformers.calibrate.texts import haystack


def wrap(tokenizer, body: str) -> str:
    """``body`` as a user turn with the generation prompt (plain text if there is no template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": body}],
                                             add_generation_prompt=True, tokenize=False)
    return body + "\n"


def build(tokenizer, needle: Needle, tokens: int, depth: float, seed: int):
    """``(input_ids [1, n], (start, end))``: a prompt of about ``tokens`` tokens with ``needle.fact``
    between paragraphs at ``depth`` (0 = start, 1 = end), and the needle's token span."""
    import torch

    overhead = len(tokenizer(wrap(tokenizer, f"{needle.fact}\n\n\n\n{needle.question}")).input_ids)
    paras = haystack(tokenizer, max(16, tokens - overhead), seed)
    at = min(len(paras), max(0, round(depth * len(paras))))
    body = "\n\n".join(paras[:at] + [needle.fact] + paras[at:]) + "\n\n" + needle.question
    text = wrap(tokenizer, body)
    enc = tokenizer(text, return_offsets_mapping=True)
    a = text.index(needle.fact)
    b = a + len(needle.fact)
    inside = [i for i, (s, e) in enumerate(enc.offset_mapping) if e > a and s < b and e > s]
    if not inside:
        raise RuntimeError("needle tokens not found in the prompt (tokenizer without offsets?)")
    return torch.tensor([enc.input_ids]), (inside[0], inside[-1] + 1)
