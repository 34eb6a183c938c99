"""Loading the model to calibrate: the bundled SmolLM2 by default, or any local transformers model
(a directory in HF format, or a GGUF file), always offline."""

from __future__ import annotations

import os
from pathlib import Path


def load_model(spec: str | None, attn_implementation: str):
    """``(model, tokenizer)`` in eval mode, float32, with ``attn_implementation``.

    ``spec``: None/"" (SmolLM2-135M-Instruct), a name of :mod:`kvd_transformers.models`
    ("smollm2-135m", "gemma3-270m"; "smollm2", "gemma3"), a directory holding a transformers model,
    a ``*.gguf`` file, or ``DIR:FILE.gguf``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvd_transformers import models

    name = models.ALIASES.get(spec or "smollm2", spec or "smollm2")
    if name in models.MODELS:
        return models.load(name, attn_implementation, torch.float32)
    if spec.endswith(".gguf") and ":" in spec and not Path(spec).exists():
        directory, gguf = spec.rsplit(":", 1)
    elif spec.endswith(".gguf"):
        directory, gguf = str(Path(spec).parent), Path(spec).name
    else:
        directory, gguf = spec, None
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"--model: {directory} is not a directory")
    kw = dict(local_files_only=True)
    if gguf:
        kw["gguf_file"] = gguf
    tokenizer = AutoTokenizer.from_pretrained(directory, **kw)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation=attn_implementation,
                                                 dtype=torch.float32, **kw)
    model.eval()
    return model, tokenizer


def layout(model) -> dict:
    """``{layers, kv_heads, q_heads, head_dim}`` of the model."""
    from kvd_transformers.layout import model_layout_of
    return model_layout_of(model.config)


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch (0 = leave torch's default). On a shared machine one thread
    is often much faster than several: OpenMP threads spin-wait for each other when another
    process holds a core (measured: 45 s vs 2.6 s per 512-token question on 2 busy cores)."""
    if n > 0:
        import torch
        torch.set_num_threads(n)
