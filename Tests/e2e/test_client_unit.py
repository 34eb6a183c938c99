"""Client checks that need no daemon: dtype mapping, params, slot-write math, views, timeouts."""

import threading
import time
import types

import ml_dtypes
import numpy as np
import pytest
import zmq

from conftest import assert_bits_equal, make_kv, MODEL_BF16, MODEL_F16, MODEL_F32
from kvd import Client, ErrorCode, KvdError
from kvd import dtypes
from kvd.client import _param, _tensor
from kvd import paging
from kvd.shm import ArenaHeader, parse_header, _HEADER
from kvd.v1 import append_pb2, common_pb2, envelope_pb2, query_pb2
from kvd.views import HeadData, QueryResult


def test_error_code_mirrors_proto():
    for name, value in common_pb2.ErrorCode.items():
        assert ErrorCode[name.removeprefix("ERROR_CODE_")] == value
    assert ErrorCode.INVALID_ARGUMENT == 1 and ErrorCode.UNAVAILABLE == 9


def test_kvd_error_str_shows_code_and_message():
    e = KvdError(2, "kvd: sequence 7 not found")
    assert e.code is ErrorCode.NOT_FOUND and e.message == "kvd: sequence 7 not found"
    assert "NOT_FOUND" in str(e) and "sequence 7" in str(e)
    assert KvdError(99, "x").code is ErrorCode.UNSPECIFIED and KvdError(99, "x").raw_code == 99


@pytest.mark.parametrize("np_dtype, code", [
    (np.float16, common_pb2.DTYPE_F16), (ml_dtypes.bfloat16, common_pb2.DTYPE_BF16),
    (np.float32, common_pb2.DTYPE_F32), (np.dtype(">f4"), common_pb2.DTYPE_F32)])
def test_dtype_mapping(np_dtype, code):
    assert dtypes.from_numpy(np_dtype) == code
    assert dtypes.to_numpy(code).itemsize == np.dtype(np_dtype).itemsize


@pytest.mark.parametrize("bad", [np.float64, np.int16, np.uint8])
def test_unsupported_dtype_rejected(bad):
    with pytest.raises(KvdError) as ei:
        dtypes.from_numpy(bad)
    assert ei.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(KvdError):
        dtypes.to_numpy(common_pb2.DTYPE_UNSPECIFIED)


def test_tensor_encoding_is_little_endian_row_major():
    a = np.arange(24, dtype=">f4").reshape(1, 2, 3, 4)  # big-endian input gets converted
    t = _tensor(a)
    assert t.dtype == common_pb2.DTYPE_F32 and list(t.shape) == [1, 2, 3, 4]
    assert t.data == np.arange(24, dtype="<f4").tobytes()
    b = np.ones((1, 1, 2, 2), dtype=ml_dtypes.bfloat16)
    assert _tensor(b).data == bytes.fromhex("803f") * 4  # bf16(1.0) = 0x3f80, little-endian


def test_param_kinds():
    assert _param("sinks", 4).WhichOneof("value") == "int_value"
    assert _param("sinks", np.int64(4)).int_value == 4
    assert _param("flag", True).WhichOneof("value") == "bool_value"  # not int, although bool is
    assert _param("ratio", 0.5).float_value == 0.5
    assert _param("name", "x").string_value == "x"
    with pytest.raises(TypeError):
        _param("bad", [1])


def test_parse_header():
    raw = _HEADER.pack(b"KVDARENA", 1, 4096, 77, 1 << 20, 4096, 191, 0, 4096, 786432, 262144)
    h = parse_header(raw + bytes(4096 - len(raw)))
    assert h == ArenaHeader(b"KVDARENA", 1, 4096, 77, 1 << 20, 4096, 191, 0, 4096, 786432, 262144)
    assert _HEADER.size == 72


def _fake_reservation(L, H, T, P, first_slot):
    """HeadSlots as kvd would send them: each head starts at first_slot of its own fresh pages."""
    heads, page = [], 0
    for l in range(L):
        for h in range(H):
            n = paging.pages_needed(first_slot, T, P)
            ids = np.arange(page, page + n, dtype="<u4")
            heads.append(append_pb2.HeadSlots(layer=l, head=h, first_slot=first_slot,
                                              page_ids=ids.tobytes()))
            page += n
    return heads, page


@pytest.mark.parametrize("first_slot", [0, 1, 3])
@pytest.mark.parametrize("model", [MODEL_F16, MODEL_BF16, MODEL_F32])
def test_write_tokens_places_each_token_at_its_slot(model, first_slot):
    L, H, T, D, P = 2, 2, 7, 8, 4
    k, v = make_kv(model, T, seed=3)
    isz = k.dtype.itemsize
    page_bytes, pages_offset = 2 * P * D * isz + 64, 128   # pages wider than needed, like kvd's
    heads, npages = _fake_reservation(L, H, T, P, first_slot)
    buf = bytearray(pages_offset + npages * page_bytes)
    space = paging.PageSpace(buf, pages_offset, page_bytes, npages)
    ids, slots = paging.reservation_pages(heads, L, H)
    paging.write_tokens(space, ids, slots, k, v, P)
    # Read back with the layout rule from PROTOCOL.md, one token at a time: token t of a head is at
    # slot first_slot + t of its pages (P per page); K block first, then V block.
    for l in range(L):
        for h in range(H):
            for t in range(T):
                p, s = divmod(first_slot + t, P)
                base = pages_offset + int(ids[l * H + h][p]) * page_bytes
                kk = np.frombuffer(buf, k.dtype, D, base + s * D * isz)
                vv = np.frombuffer(buf, k.dtype, D, base + (P + s) * D * isz)
                assert_bits_equal(kk, k[l, h, t], f"K {l},{h},{t}")
                assert_bits_equal(vv, v[l, h, t], f"V {l},{h},{t}")
    # Slots before first_slot and the padding after each page's V block stay untouched.
    for p in range(npages):
        base = pages_offset + p * page_bytes
        assert bytes(buf[base + 2 * P * D * isz: base + page_bytes]) == bytes(64)
    if first_slot:
        assert bytes(buf[pages_offset:pages_offset + first_slot * D * isz]) == bytes(first_slot * D * isz)
    # Reading back whole heads (packed from slot 0) gives the same tokens.
    if first_slot == 0:
        got = paging.read_tokens(space, np.stack(ids), T, D, k.dtype, P, values=False)
        assert_bits_equal(got.reshape(k.shape), k, "read_tokens K")


def test_write_tokens_refuses_wrong_head_dim_and_writes_nothing():
    L, H, T, D, P = 1, 1, 4, 8, 4
    heads, n = _fake_reservation(L, H, T, P, 0)
    ids, slots = paging.reservation_pages(heads, L, H)
    big = np.zeros((1, 1, T, 2 * D), np.float16)  # wrong head_dim: a page cannot hold P of these
    buf = bytearray(4096)
    with pytest.raises(KvdError):
        paging.write_tokens(paging.PageSpace(buf, 0, 2 * P * D * 2, 2), ids, slots, big, big, P)
    assert buf == bytearray(4096)


def test_reservation_pages_checks_heads_and_counts():
    heads, n = _fake_reservation(2, 2, 5, 4, 0)
    ids, slots = paging.reservation_pages(heads, 2, 2)
    k = np.zeros((2, 2, 9, 8), np.float16)
    with pytest.raises(KvdError):                  # 9 tokens need 3 pages, 5 reserved 2
        paging.write_tokens(paging.PageSpace(bytearray(8192), 0, 128, 32), ids, slots, k, k, 4)
    with pytest.raises(KvdError):
        paging.reservation_pages(heads[:3], 2, 2)  # a head missing
    with pytest.raises(KvdError):
        paging.reservation_pages(heads, 1, 2)      # heads beyond the tensor's layers
    with pytest.raises(KvdError):
        paging.reservation_pages(heads + heads[:1], 2, 2)  # a head twice


def test_split_counts_lead_whole_tail():
    assert paging.split(0, 9, 4) == (0, 2, 1)
    assert paging.split(1, 9, 4) == (3, 1, 2)
    assert paging.split(3, 1, 4) == (1, 0, 0)
    assert paging.split(2, 1, 4) == (1, 0, 0)
    assert paging.pages_needed(3, 1, 4) == 1 and paging.pages_needed(3, 2, 4) == 2


def _head(layer, head, pages, d=4, dtype=np.float32):
    n = sum(len(p) for p in pages)
    return HeadData(layer, head, n, d, np.dtype(dtype), np.arange(n, dtype=np.int32),
                    np.zeros(n, np.float32), pages, [p * 2 for p in pages])


def test_head_views_single_run_is_view_several_runs_concatenate():
    backing = np.arange(40, dtype=np.float32).reshape(10, 4)
    one = _head(0, 0, [backing[:3]])
    assert one.keys.base is not None and np.shares_memory(one.keys, backing) and one.is_view
    two = _head(0, 1, [backing[:2], backing[5:8]])
    assert not two.is_view and two.keys.shape == (5, 4)
    assert np.array_equal(two.keys, np.concatenate([backing[:2], backing[5:8]]))
    assert not np.shares_memory(two.keys, backing)
    cp = one.copy()
    assert not np.shares_memory(cp.keys, backing) and np.array_equal(cp.keys, one.keys)
    empty = _head(1, 0, [])
    assert empty.keys.shape == (0, 4)


def test_head_copy_keeps_alias_fields():
    """A KVSharer-aliased head (layer 3 reading layer 1) is still aliased, owner 1, once copied."""
    backing = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = HeadData(3, 0, 3, 4, np.dtype(np.float32), np.arange(3, dtype=np.int32),
                 np.zeros(3, np.float32), [backing], [backing], aliased=True, owner_layer=1)
    cp = h.copy()
    assert (cp.layer, cp.aliased, cp.owner_layer) == (3, True, 1)
    own = _head(2, 1, [backing]).copy()
    assert (own.aliased, own.owner_layer) == (False, 2)


def test_stacked():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    heads = [_head(l, h, [k[l, h, :1], k[l, h, 1:]]) for l in range(2) for h in range(2)]
    q = QueryResult(1, 1, 3, np.dtype(np.float32), 4, "pages", heads)
    K, V = q.stacked()
    assert np.array_equal(K, k) and np.array_equal(V, k * 2)
    assert q[1, 0] is heads[2] and q.layers == [0, 1]
    uneven = QueryResult(1, 1, 3, np.dtype(np.float32), 4, "pages",
                         [_head(0, 0, [k[0, 0]]), _head(0, 1, [k[0, 1, :2]])])
    with pytest.raises(ValueError):
        uneven.stacked()


def test_timeout_raises_unavailable_and_recovers(tmp_path):
    endpoint = f"ipc://{tmp_path}/nobody.sock"
    with Client(endpoint, timeout_ms=150) as c:
        for _ in range(2):  # the second call works on the recreated socket the same way
            t0 = time.monotonic()
            with pytest.raises(KvdError) as ei:
                c.stats()
            assert ei.value.code == ErrorCode.UNAVAILABLE
            assert "no reply from" in ei.value.message and "150 ms" in ei.value.message
            assert 0.1 < time.monotonic() - t0 < 2.0


def _fake_server(endpoint, script, ready):
    """A ROUTER that answers requests per ``script(request) -> list of Response``."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint)
    ready.set()
    try:
        while s.poll(3000):
            ident, payload = s.recv_multipart()
            req = envelope_pb2.Request()
            req.ParseFromString(payload)
            replies = script(req)
            if replies is None:
                break
            for r in replies:
                s.send_multipart([ident, r.SerializeToString()])
    finally:
        s.close(linger=0)


def test_replies_with_other_ids_are_discarded_and_errors_raised(tmp_path):
    endpoint = f"ipc://{tmp_path}/fake.sock"
    seen = []

    def script(req):
        seen.append(req.request_id)
        if req.WhichOneof("body") == "release":
            return None
        stale = envelope_pb2.Response()
        stale.header.request_id = req.request_id + 1000  # a late reply of some older request
        stale.error.code = common_pb2.ERROR_CODE_INTERNAL
        good = envelope_pb2.Response()
        good.header.request_id = req.request_id
        if req.WhichOneof("body") == "stats":
            good.stats.total_pages = 42
        else:
            good.error.code = common_pb2.ERROR_CODE_NOT_FOUND
            good.error.message = "kvd: model nope not found"
        return [stale, good]

    ready = threading.Event()
    t = threading.Thread(target=_fake_server, args=(endpoint, script, ready), daemon=True)
    t.start()
    ready.wait(5)
    with Client(endpoint, timeout_ms=700) as c:
        assert c.stats().total_pages == 42
        with pytest.raises(KvdError) as ei:
            c.create_sequence("nope")
        assert ei.value.code == ErrorCode.NOT_FOUND and "nope" in ei.value.message
        with pytest.raises(KvdError):
            c.release(1)  # the fake server stops without answering
    t.join(5)
    assert seen[:2] == [1, 2] and all(i > 0 for i in seen) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("tokens", [0, 1, 37])
def test_hand_assembled_inline_append_equals_protobuf_serialization(dtype, tokens):
    """kvd.wire splices the tensors' bytes in by hand; protobuf's own encoding is the reference."""
    from kvd import wire
    from kvd.v1 import append_pb2, envelope_pb2
    rng = np.random.default_rng(tokens)
    k = rng.standard_normal((3, 2, tokens, 8)).astype(dtype)
    v = rng.standard_normal((3, 2, tokens, 8)).astype(dtype)
    want = envelope_pb2.Request(request_id=2**40 + 7, protocol_version=1, append=append_pb2.AppendRequest(
        sequence_id=300, keys=_tensor(k), values=_tensor(v))).SerializeToString()
    got = wire.inline_append(2**40 + 7, 1, 300, k, v)
    assert got == want
    # And it decodes back to the same arrays.
    back = envelope_pb2.Request.FromString(got)
    assert back.append.keys.data == k.tobytes() and back.append.values.data == v.tobytes()
