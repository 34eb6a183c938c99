"""SmolLM2 for the report: :func:`kvd_transformers.load_smollm2` (GGUF, de-quantized, ~20 s), with
the de-quantized model and tokenizer kept as safetensors under ``~/.cache/kvd/report-smollm2-f32``
(``$KVD_REPORT_MODEL_CACHE``) so later runs load in a second or two. Local files only."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("KVD_REPORT_MODEL_CACHE",
                               Path.home() / ".cache" / "kvd" / "report-smollm2-f32"))


def load():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kvd_transformers import load_smollm2, register_attention
    from kvd_transformers.model import smollm2_gguf

    d = cache_dir()
    stamp = d / "source.txt"
    gguf = smollm2_gguf()
    source = f"{gguf} {gguf.stat().st_size} {gguf.stat().st_mtime_ns}"
    if stamp.is_file() and stamp.read_text() == source:
        try:
            name = register_attention()
            tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
            config = AutoConfig.from_pretrained(str(d), local_files_only=True)
            config._attn_implementation = name
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                     attn_implementation=name)
            state = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model.tie_weights()
            return model.eval(), tok
        except Exception as e:  # a broken cache: rebuild it
            print(f"[report] model cache {d} unusable ({e}); rebuilding", flush=True)
    model, tok = load_smollm2()
    try:
        import shutil

        tmp = d.with_name(d.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        type(model.config).from_dict(cfg).save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        torch.save(model.state_dict(), tmp / "weights.pt")
        (tmp / "source.txt").write_text(source)
        if d.exists():
            shutil.rmtree(d)
        tmp.rename(d)
    except OSError:
        pass  # no cache: still fine
    return model, tok
