"""Section 10: a prefix hit across daemons (docs/REMOTE.md, "Shared prefixes across daemons"), with
section 7's model, prompts and measurements (``prefix.py``).

Two kvd daemons stand in for two machines: each on its own copy of Config/bench.yaml, both with
``remote.share_prefixes`` on one redis-server on loopback and the same ``prefix.key_file`` (a new
random key each time). On a fresh Redis and two fresh daemons:

1. daemon 1: prompt A through a KvdCache with ``reuse_prefix=True``; its full pages are indexed and
   published to Redis, and the run waits until every one of them has shipped;
2. daemon 2: section 7's warm-up, then its baselines for prompt B — plain transformers (sdpa) and a
   cold KvdCache (no reuse: nothing looked up, indexed or published);
3. cross-daemon warm: daemon 2, which has never seen the document, runs prompt B with
   ``reuse_prefix=True, prompt_ids=B``: its adopting CreateSequence misses locally, fetches the
   shared prefix's blocks from Redis, checks them, writes them into pages and adopts them; the
   model prefills only the rest;
4. local warm, for reference: prompt B the same way on daemon 1, which computed the prefix itself
   (section 7's warm path with the remote tier on). Redis first goes back to A's blocks alone
   (daemon 2 published B's own blocks past the prefix), so both warm runs adopt the same tokens.

One run does this ``repeats`` times (run.py: 2, 1 in smoke runs), on a new Redis and new daemons
each time, and keeps the best time of each kind: a warm prefill can run only once per daemon (a
second would find B's own pages), and on a shared machine one prefill can take several times its
usual time.

Prefill time is section 7's (cache creation to the end of the first forward pass); the adopting
CreateSequence is also timed alone (for daemon 2 it holds the whole Redis import). Ratios are
within the run: cold ÷ cross-daemon warm, sdpa ÷ cross-daemon warm, cross-daemon ÷ local warm.
Also recorded: whether the greedy tokens of every warm run are those of the cold run, how many
tokens were adopted, and daemon 2's remote counters — blocks imported from Redis (every adopted
block must be one) and rejected.
"""
import json
import os
import shutil
import time

from . import prefix
from .processes import Daemon
from .remote import Redis
from .summary import fmt, spread

TITLE = "10. Cross-daemon prefix hit"


class SharingDaemon(Daemon):
    """kvd on Config/bench.yaml plus a prefix key file and a remote tier that shares prompt blocks
    through the Redis on `redis_port` (and offloads nothing: nothing here is evicted anyway)."""

    def __init__(self, tag: str, redis_port: int, key_hex: str):
        super().__init__(tag)
        (self.dir / "prefix.key").write_text(key_hex + "\n")
        remote = {"enabled": True, "nodes": [f"127.0.0.1:{redis_port}"], "key_prefix": "bench:",
                  "share_prefixes": True, "offload_evicted": False, "command_timeout_ms": 10000}
        with self.config.open("a") as f:
            # bench.yaml has neither section; key_file is relative to the config file.
            f.write(f'\nprefix: {{"enabled": true, "key_file": "prefix.key"}}\nremote: {json.dumps(remote)}\n')

    def __exit__(self, *exc):
        super().__exit__(*exc)
        (self.dir / "prefix.key").unlink(missing_ok=True)  # keys are secret (prefix.key_file in Config/kvd.yaml)


def missing() -> list:
    return prefix.missing() + [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]


def block_keys(redis) -> list:
    """The prompt blocks in Redis (docs/REMOTE.md, "Keys")."""
    return [k for k in redis.cli("--scan", "--pattern", "bench:*:blk:*").splitlines() if k]


def wait_published(client, blocks: int, timeout_s: float = 120.0):
    """The daemon's remote stats once it has published (or failed to) `blocks` blocks and none waits
    in its queue: a reader must find them all in Redis, not the part shipped so far."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.stats().remote
        if r.blocks_published + r.blocks_publish_failures >= blocks and r.queued == 0:
            return r
        if time.monotonic() > deadline:
            raise RuntimeError(f"kvd published {r.blocks_published} of {blocks} blocks in {timeout_s} s "
                               f"({r.blocks_publish_failures} failed, {r.queued} queued)")
        time.sleep(0.01)


def once(model, a, b, new_tokens: int) -> dict:
    """Steps 1-4 on a fresh Redis and two fresh daemons (see the module docstring)."""
    from kvd import Client
    from kvd_transformers import KvdCache

    key = os.urandom(16).hex()
    with Redis() as redis, SharingDaemon("xprefix1", redis.port, key) as d1, \
            SharingDaemon("xprefix2", redis.port, key) as d2, \
            Client(d1.endpoints.ipc, timeout_ms=60000) as c1, Client(d2.endpoints.ipc, timeout_ms=60000) as c2:
        first = lambda **kw: KvdCache(c1, prefix.MODEL, model=model, **kw)
        second = lambda **kw: KvdCache(c2, prefix.MODEL, model=model, **kw)
        # 1. Daemon 1 computes A (kept alive, as in section 7) and ships its blocks.
        cache_a = prefix.reuse(model, a, first, new_tokens)[2]
        shipped = wait_published(c1, cache_a.get_seq_length() // prefix.PAGE_TOKENS)
        a_keys = set(block_keys(redis))
        # 2. Daemon 2's baselines (no reuse: nothing looked up, indexed or published).
        prefix.warm_up(model, b, second)
        sdpa_s, cold_s, cold = prefix.baselines(model, b, second, new_tokens, repeats=1)
        # 3. Local miss, import from Redis, adopt, prefill the rest.
        before = c2.stats()
        cross_s, cross, cache_b2, cross_create_s = prefix.reuse(model, b, second, new_tokens)
        after = c2.stats()
        adopted = cache_b2.adopted_tokens
        # Daemon 2 published B's own blocks past the shared prefix; left in Redis, daemon 1 would
        # import them and adopt more of B than daemon 2 could. Redis goes back to A's blocks alone.
        wait_published(c2, cache_b2.get_seq_length() // prefix.PAGE_TOKENS - adopted // prefix.PAGE_TOKENS)
        b_keys = sorted(set(block_keys(redis)) - a_keys)
        if b_keys:
            redis.cli("DEL", *b_keys)
        # 4. Daemon 1: the same prompt as a local hit.
        local_s, local, cache_b1, local_create_s = prefix.reuse(model, b, first, new_tokens)
        local_adopted = cache_b1.adopted_tokens
        for cache in (cache_a, cache_b2, cache_b1):
            cache.release()
    imported = after.remote.blocks_imported - before.remote.blocks_imported
    return {"sdpa_s": sdpa_s, "cold_s": cold_s, "cross_s": cross_s, "local_s": local_s,
            "cross_create_s": cross_create_s, "local_create_s": local_create_s,
            "adopted": adopted, "local_adopted": local_adopted,
            "identical": cross == cold, "local_identical": local == cold,
            "cold_tokens": cold, "cross_tokens": cross, "local_tokens": local,
            "published": shipped.blocks_published, "publish_failures": shipped.blocks_publish_failures,
            "imported": imported, "rejected": after.remote.blocks_rejected - before.remote.blocks_rejected,
            "imported_bytes": imported * prefix.HEADS * after.page_bytes}


def measure(doc_tokens: int, new_tokens: int, repeats: int = 2) -> dict:
    """One run: `repeats` times steps 1-4, each on fresh daemons; the best time of each kind."""
    gone = missing()
    if gone:
        return {"skipped": f"needs {', '.join(gone)}"}
    model, tok = prefix.load_model()
    a, b = prefix.prompts(tok, doc_tokens)
    reps = [once(model, a, b, new_tokens) for _ in range(repeats)]
    best = {k: min(r[k] for r in reps) for k in ("sdpa_s", "cold_s", "cross_s", "local_s", "cross_create_s",
                                                  "local_create_s")}
    r0 = reps[0]
    same = lambda k: all(r[k] == r0[k] for r in reps)
    return {"prompt_a": len(a), "prompt_b": len(b), "shared": prefix.shared_tokens(a, b), "new_tokens": new_tokens,
            **best, "cold_ratio": best["cold_s"] / best["cross_s"], "sdpa_ratio": best["sdpa_s"] / best["cross_s"],
            "cross_vs_local": best["cross_s"] / best["local_s"],
            "adopted": r0["adopted"], "local_adopted": r0["local_adopted"],
            "identical": all(r["identical"] for r in reps), "local_identical": all(r["local_identical"] for r in reps),
            "published": r0["published"], "imported": r0["imported"], "rejected": sum(r["rejected"] for r in reps),
            "imported_bytes": r0["imported_bytes"],
            # Daemon 2 held nothing of the prefix: every block it adopted came from Redis, each time;
            # and the local hit adopted exactly as much, so both prefills do the same work.
            "all_from_remote": all(r["imported"] == r["adopted"] // prefix.PAGE_TOKENS for r in reps)
                               and same("adopted") and same("imported") and same("published"),
            "same_adopted": all(r["local_adopted"] == r["adopted"] for r in reps),
            "repeats": reps}


def table(runs: list) -> list:
    rows = [r for rs in runs for r in rs]
    if not rows or any("skipped" in r for r in rows):
        why = next((r["skipped"] for r in rows if "skipped" in r), "no runs")
        return [f"### {TITLE} (SmolLM2-135M through KvdCache, two daemons, one Redis)", "", f"Skipped: {why}."]
    r0 = rows[0]
    col = lambda k, digits=3: fmt(spread([r[k] for r in rows]), digits)
    identical = all(r["identical"] and r["local_identical"] for r in rows)
    lines = [f"### {TITLE} (SmolLM2-135M-Instruct f32, torch CPU, through KvdCache; two kvd daemons sharing one "
             f"redis-server on loopback (remote.share_prefixes, one prefix key); daemon 1 generated prompt A with "
             f"reuse_prefix, then daemon 2, which never saw it, prefills prompt B = a {r0['shared']}-token shared "
             f"prefix + its own question, {r0['prompt_b']} tokens; prefill s = cache creation + first forward; "
             f"every time: best of {len(r0['repeats'])}, each on a fresh Redis and fresh daemons; ratios within each run)",
             "",
             "| tokens adopted | plain transformers (sdpa) s | cold KvdCache s | cross-daemon warm s | cold ÷ cross warm | "
             "sdpa ÷ cross warm | greedy tokens identical to cold |",
             "|---:|---:|---:|---:|---:|---:|---|",
             f"| {r0['adopted']} of {r0['prompt_b']} | {col('sdpa_s')} | {col('cold_s')} | {col('cross_s')} | "
             f"{col('cold_ratio', 1)}× | {col('sdpa_ratio', 1)}× | "
             f"{'yes' if identical else '**no**'} ({r0['new_tokens']} tokens, every warm run) |",
             "",
             "| blocks published (daemon 1) | imported from Redis (daemon 2) | rejected | K/V MiB imported | "
             "adopting CreateSequence s, cross-daemon | same, local hit | local warm s (daemon 1) | "
             "cross ÷ local warm | every adopted block from Redis |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    # Block counts are the same in every run unless something failed: one value, else min–max.
    def count(k, scale=1, form="{:.0f}"):
        v = sorted(r[k] / scale for r in rows)
        return form.format(v[0]) if v[0] == v[-1] else f"{form.format(v[0])}–{form.format(v[-1])}"
    # The local hit must have adopted exactly what daemon 2 did, or the two prefills differ in work.
    local = col('local_s') + ("" if all(r["same_adopted"] for r in rows) else " **(adopted other tokens)**")
    lines.append(f"| {count('published')} | {count('imported')} | {count('rejected')} | "
                 f"{count('imported_bytes', 2**20, '{:.1f}')} | {col('cross_create_s')} | {col('local_create_s')} | "
                 f"{local} | {col('cross_vs_local', 2)}× | "
                 f"{'yes' if all(r['all_from_remote'] for r in rows) else '**no**'} |")
    return lines
