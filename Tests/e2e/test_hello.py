"""Hello, the shared-memory header and Stats describe the configured daemon."""

import os
import re
import stat

from conftest import (MAX_MESSAGE_BYTES, MAX_SEQUENCES, MAX_TOKENS_PER_APPEND, MODEL_BF16,
                      MODEL_F16, MODEL_F32, MODEL_WIDE, PAGE_BYTES, TINY)
from kvd.shm import parse_header
from kvd.v1 import common_pb2


def test_hello_lists_models_methods_limits(kvd, client):
    h = client.hello()
    assert h.protocol_version == 1 and 1 in h.supported_protocol_versions
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", h.server_version), h.server_version
    models = {m.name: m for m in h.models}
    assert set(models) == {MODEL_F16, MODEL_BF16, MODEL_F32, MODEL_WIDE}
    for name, dt in [(MODEL_F16, common_pb2.DTYPE_F16), (MODEL_BF16, common_pb2.DTYPE_BF16),
                     (MODEL_F32, common_pb2.DTYPE_F32)]:
        m = models[name]
        assert (m.layers, m.kv_heads, m.q_heads, m.head_dim, m.page_tokens) == (
            TINY["layers"], TINY["kv_heads"], TINY["q_heads"], TINY["head_dim"],
            TINY["page_tokens"])
        assert m.dtype == dt and m.default_method == "streamingllm"
    methods = {m.name: m for m in h.methods}
    assert "streamingllm" in methods
    params = {p.name: p for p in methods["streamingllm"].params}
    assert set(params) == {"sinks", "recent"}
    assert (params["sinks"].type, params["sinks"].default_value, params["sinks"].min_value) == (
        "int", "4", "0")
    assert (params["recent"].type, params["recent"].default_value, params["recent"].min_value) == (
        "int", "64", "0")
    assert h.limits.max_message_bytes == MAX_MESSAGE_BYTES
    assert h.limits.max_tokens_per_append == MAX_TOKENS_PER_APPEND
    assert h.limits.max_sequences == MAX_SEQUENCES


def test_shm_info_matches_segment_header(kvd, client):
    info = client.hello().shm
    assert info.name == kvd.shm_name
    assert info.size_bytes == 1 << 20 and info.staging_bytes == 256 << 10
    # page bytes: the largest 2 * P * head_dim * sizeof(dtype) over the models, rounded up to 64
    assert info.page_bytes == PAGE_BYTES
    assert info.layout_version == 1
    assert info.pages_offset >= 4096
    assert info.pages_offset + info.page_count * info.page_bytes <= info.staging_offset
    assert info.staging_offset + info.staging_bytes <= info.size_bytes
    assert info.page_count >= 150  # (1 MiB - header - 256 KiB staging) / 4 KiB is ~191

    st = os.stat(kvd.shm_path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == info.size_bytes
    hdr = parse_header(client.arena.buffer)
    assert hdr.magic == b"KVDARENA" and hdr.layout_version == 1 and hdr.header_bytes == 4096
    assert (hdr.arena_generation, hdr.size_bytes, hdr.page_bytes, hdr.page_count) == (
        info.arena_generation, info.size_bytes, info.page_bytes, info.page_count)
    assert (hdr.pages_offset, hdr.staging_offset, hdr.staging_bytes) == (
        info.pages_offset, info.staging_offset, info.staging_bytes)
    assert hdr.reserved == 0


def test_stats_of_fresh_daemon(client):
    st = client.stats()
    info = client.hello().shm
    assert st.total_pages == info.page_count == st.free_pages
    assert st.page_bytes == info.page_bytes and st.sequences == 0
    assert st.staging_bytes == info.staging_bytes and st.staging_used_bytes == 0
    assert not st.HasField("sequence")
    before = st.requests
    assert client.stats().requests > before  # every answered request is counted


def test_server_version_in_every_header(kvd, client):
    from conftest import raw_roundtrip, parse_response
    from kvd.v1 import envelope_pb2
    req = envelope_pb2.Request(request_id=99)
    req.stats.SetInParent()
    r = parse_response(raw_roundtrip(kvd.endpoint, [req.SerializeToString()])[-1])
    assert r.header.request_id == 99 and r.header.protocol_version == 1
    assert r.header.server_version == client.hello().server_version
