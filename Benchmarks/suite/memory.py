"""Section 5: the daemon's resident memory outside the shm arena, per KV byte it manages. A fresh
daemon is filled with sequences of 256 tokens (zero-copy appends) up to about 1k and 100k pages;
the growth of (VmRSS - RssShmem) from the empty daemon, divided by the K/V bytes stored, is the
bookkeeping cost (page lists, positions, log-weights, sequence objects)."""
import numpy as np

from kvd import Client

from .processes import Daemon

TOKENS = 256


def measure(model: str, pages_wanted: int) -> dict:
    with Daemon(f"mem{pages_wanted}") as d, Client(d.endpoints.ipc) as c:
        c.hello()
        layout = c.models[model]
        heads = layout.layers * layout.kv_heads
        per_seq_pages = heads * -(-TOKENS // layout.page_tokens)
        sequences = max(1, round(pages_wanted / per_seq_pages))
        dt = np.float16 if layout.dtype == 1 else np.float32
        k = np.ones((layout.layers, layout.kv_heads, TOKENS, layout.head_dim), dt)
        # One throwaway sequence first, so first-use costs (protobuf, Dispatch threads, arena page
        # tables of the daemon) are in the baseline, not in the per-byte figure.
        warm = c.create_sequence(model)
        c.append(warm, k, k, zero_copy=True)
        c.release(warm)
        before = d.memory()
        for _ in range(sequences):
            c.append(c.create_sequence(model), k, k, zero_copy=True)
        after = d.memory()
        stats = c.stats()
        kv_bytes = sequences * 2 * k.nbytes
        grown = after["outside_arena"] - before["outside_arena"]
        return {"model": model, "sequences": sequences, "pages": stats.total_pages - stats.free_pages,
                "kv_bytes": kv_bytes, "outside_arena_before": before["outside_arena"],
                "outside_arena_after": after["outside_arena"], "grown": grown, "per_kv_byte": grown / kv_bytes}
