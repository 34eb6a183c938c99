"""A context manager that wraps the registered "kvd" attention function and keeps each layer's
query and output, for tests that check attention outputs against NumPy (SmolLM2 and Gemma)."""

from __future__ import annotations

from kvd_transformers import attention as kvd_attn
from kvd_transformers import register_attention


class Recorder:
    """Wraps the registered "kvd" attention function to keep each layer's query and output."""

    def __init__(self):
        self.calls = {}

    def __enter__(self):
        from transformers import AttentionInterface

        def recording(module, query, key, value, *a, **kw):
            out, w = kvd_attn.kvd_attention(module, query, key, value, *a, **kw)
            self.calls[module.layer_idx] = (query.detach().clone(), out.detach().clone())
            return out, w

        AttentionInterface.register(kvd_attn.ATTN_NAME, recording)
        return self

    def __exit__(self, *exc):
        register_attention()
