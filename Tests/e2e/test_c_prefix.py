"""The C client's prefix reuse (kvd_client_lookup, adopting kvd_client_create_sequence_ex,
kvd_client_fork, token ids on kvd_client_append_ex / kvd_client_commit_ex, kvd_client_prefix_stats)
against real daemons.

The C test program's ``prefix`` cases (also part of ``all``, so Tests/e2e/test_c_client.py runs them
plainly and under valgrind, and scripts/sanitizers.sh under ASan + UBSan) check lookup hits in whole
pages, adopt and fork bit-exact on both sides, the prefix held once (free, shared and saved pages) and
that malformed inputs change nothing. Here they run on their own, and across languages: token ids
hash to the same blocks only if both clients put the same little-endian bytes on the wire, so ids
appended by one client must be found, adopted and forked by the other.
"""

from __future__ import annotations

import numpy as np

from conftest import MODEL_F16, TINY, assert_sequence, make_kv
from test_c_client import _summary, c_build, c_daemon, run_c  # noqa: F401  (fixtures)

P = TINY["page_tokens"]
SHAPE = (TINY["layers"], TINY["kv_heads"])


def prompt_ids(base: int, n: int) -> list[int]:
    """The C test program's ids (prompt_id): spread over all four bytes, many above 2**31."""
    return [(base + t * 2654435761) % 2**32 for t in range(n)]


def test_c_prefix_cases(c_build, c_daemon):
    p = run_c(["prefix", c_daemon.endpoint])
    assert p.returncode == 0 and _summary(p.stdout) == (4, 0), \
        f"C prefix tests failed (exit {p.returncode}):\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"


def test_c_appends_with_ids_python_reuses(c_build, c_daemon, tmp_path):
    p = run_c(["prefix-write", c_daemon.endpoint, tmp_path])
    assert p.returncode == 0 and _summary(p.stdout) == (1, 0), p.stdout + p.stderr
    model, seq, tokens, base = (tmp_path / "prefix.txt").read_text().split()
    seq, tokens, base = int(seq), int(tokens), int(base)
    assert (model, tokens) == (MODEL_F16, 22)
    shape = (*SHAPE, tokens, TINY["head_dim"])
    k = np.fromfile(tmp_path / "prefix.k", dtype=np.float16).reshape(shape)
    v = np.fromfile(tmp_path / "prefix.v", dtype=np.float16).reshape(shape)
    ids = prompt_ids(base, tokens)
    with c_daemon.client() as c:
        assert c.lookup(MODEL_F16, ids) == 20
        assert c.lookup(MODEL_F16, [i ^ 0x01000000 for i in ids]) == 0  # other high bytes: a miss
        r = c.create_sequence_ex(MODEL_F16, adopt_token_ids=ids + [7])
        assert r.adopted_tokens == 20
        assert_sequence(c, r.sequence_id, k[:, :, :20], v[:, :, :20])
        f = c.fork(seq, 21)
        assert_sequence(c, f, k[:, :, :21], v[:, :, :21])
        assert_sequence(c, seq, k, v)
        st = c.stats().prefix
        assert st.cached_blocks == 5 and st.shared_pages == 5 * SHAPE[0] * SHAPE[1]


def test_python_appends_with_ids_c_reuses(c_build, c_daemon, tmp_path):
    tokens, base = 27, 0xfedc0000
    ids = prompt_ids(base, tokens)
    k, v = make_kv(MODEL_F16, tokens, seed=81)  # includes -0.0, +-inf, NaN
    with c_daemon.client() as c:
        seq = c.create_sequence(MODEL_F16)
        c.append(seq, k[:, :, :11], v[:, :, :11], token_ids=ids[:11])
        c.append(seq, k[:, :, 11:], v[:, :, 11:], zero_copy=True, token_ids=ids[11:])
        k.tofile(tmp_path / "prefix.k")
        v.tofile(tmp_path / "prefix.v")
        (tmp_path / "prefix.txt").write_text(f"{MODEL_F16} {seq} {tokens} {base}\n")
        p = run_c(["prefix-read", c_daemon.endpoint, tmp_path])
        assert p.returncode == 0 and _summary(p.stdout) == (1, 0), p.stdout + p.stderr
        # The C side looked up (6 blocks), adopted them and released its sequences; Python's
        # sequence is untouched and the blocks are still cached.
        assert_sequence(c, seq, k, v)
        st = c.stats().prefix
        assert st.cached_blocks == tokens // P and st.hits >= 2 * (tokens // P)
