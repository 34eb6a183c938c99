"""Per-token appends without a round trip per step: :class:`AppendPipeline`.

A decoding model appends one token per (layer, KV head) per step. ``AppendPipeline`` reserves
``reserve_ahead`` tokens once, writes each step's K/V straight into the reserved slots of the
shared-memory arena, and sends ``Commit {num_tokens, keep_reserved}`` without waiting for its reply.
Replies are collected when the window of unanswered commits is full, before any other request of
the same :class:`kvd.Client` goes out, and at :meth:`AppendPipeline.flush`; a step the daemon
refused is raised then as a :class:`PipelineError` naming the step — never dropped. When the
reservation runs out, the next Reserve goes out right behind the commit that used it up.

Ordering: kvd runs the requests of one sequence one at a time in the order they arrive (the
sequence's serial queue; docs/ARCHITECTURE.md), so pipelined commits apply in the order sent.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import ml_dtypes
import numpy as np

from kvd import dtypes, wire
from kvd.errors import ErrorCode, KvdError
from kvd.inflight import Inflight
from kvd.paging import reservation_pages
from kvd.v1 import append_pb2


class PipelineError(KvdError):
    """A pipelined step failed on the daemon. ``step`` (0-based ``append`` call; ``last_step``
    the last one when the Commit carried several, commit_every), ``kind``
    ("commit" or "reserve"), ``first_position`` (where its tokens would have started),
    ``tokens``, ``confirmed_length`` (the sequence's length in the last commit reply that
    succeeded) and ``cause`` (the daemon's KvdError). A commit is all or nothing: nothing of the
    failed step is visible. After a failed commit the pipeline refuses more appends."""

    def __init__(self, cause: KvdError, kind: str, step: int, seq: int, first_position: int,
                 tokens: int, confirmed_length: int, last_step: Optional[int] = None):
        what = (f"commit of {tokens} token(s) at position {first_position}" if kind == "commit"
                else f"reserve of {tokens} token(s)")
        last_step = step if last_step is None else last_step
        steps = f"step {step}" if last_step == step else f"steps {step}-{last_step}"
        super().__init__(cause.raw_code,
                         f"kvd: pipelined append {steps} of sequence {seq} failed: {what}: "
                         f"{cause.message.removeprefix('kvd: ')} (nothing of that step was published; the last "
                         f"confirmed length is {confirmed_length})", cause.request_id)
        self.cause = cause
        self.kind = kind
        self.step = step
        self.last_step = last_step
        self.first_position = first_position
        self.tokens = tokens
        self.confirmed_length = confirmed_length
        self.reported = False  # raised to the caller at least once


def as_array(x: Any) -> np.ndarray:
    """``x`` as a NumPy array without a copy: NumPy arrays as they are, CPU torch tensors through
    ``.numpy()`` (bfloat16 through an int16 view); anything else through ``np.asarray``."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "torch":
        if x.device.type != "cpu":
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: the tensor is on {x.device}; the arena is host memory: pass "
                           f".cpu() tensors")
        x = x.detach()
        if str(x.dtype) == "torch.bfloat16":
            import torch  # only here: kvd does not need torch otherwise
            return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return x.numpy()
    return np.asarray(x)


class _Reservation:
    """An open reservation: where each of its tokens goes, as element offsets into the arena's
    page area, for every head that stores something."""

    __slots__ = ("rid", "remaining", "used", "rows")

    def __init__(self, rid: int, tokens: int, rows: np.ndarray):
        self.rid = rid
        self.remaining = tokens
        self.used = 0
        self.rows = rows  # int64 [stored heads, tokens]: element offset of each token's K


class AppendPipeline:
    """Pipelined zero-copy appends to sequence ``seq`` through ``client``.

    ``reserve_ahead`` tokens are reserved at a time; ``max_in_flight`` commits may be unanswered
    at once (1: each step's reply is collected before the next step's commit goes out). Use as a
    context manager, or call :meth:`close`: it collects every reply and aborts what is still
    reserved. ``model`` names the sequence's model when this client did not create it.
    ``commit_every`` N > 1 sends one Commit per N tokens instead of one per append: tokens become
    visible to other clients in batches of N — and before any other request of this client, at
    :meth:`flush` and when the reservation is used up — for 1/N of the messages.
    Not thread-safe (like the Client); one pipeline per sequence.
    """

    def __init__(self, client: Any, seq: int, reserve_ahead: int = 64, max_in_flight: int = 4,
                 model: Optional[str] = None, commit_every: int = 1):
        if not isinstance(reserve_ahead, int) or reserve_ahead < 1:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: reserve_ahead must be an int of at least 1, got {reserve_ahead!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: max_in_flight must be an int of at least 1, got {max_in_flight!r}")
        if not isinstance(commit_every, int) or commit_every < 1:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: commit_every must be an int of at least 1, got {commit_every!r}")
        self.commit_every = commit_every
        self.client = client
        self.seq = seq
        self.reserve_ahead = reserve_ahead
        self.max_in_flight = max_in_flight
        arena = client.arena  # Hello: maps the segment and learns the models
        # One round trip at the start: the model (for shape and dtype checks: kvd cannot see
        # zero-copy bytes) and the length the first step starts at.
        now = client.stats(seq).sequence
        name = model or client._seq_models.get(seq) or now.model
        layout = client.models.get(name)
        if layout is None:
            raise KvdError(ErrorCode.NOT_FOUND, f"kvd: the daemon lists no model {name!r}")
        self.layout = layout
        self._dtype = dtypes.to_numpy(layout.dtype)
        es = self._dtype.itemsize
        d = layout.head_dim
        info = arena.info
        elems = info.page_count * info.page_bytes // es
        # Row r of `_win` is the head_dim elements from element r of the page area: a token's K
        # (or V) is one row, so a whole step is one fancy-indexed assignment for K and one for V.
        base = arena.array(info.pages_offset, elems, self._dtype, writable=True)
        self._win = np.lib.stride_tricks.as_strided(base, shape=(elems - d + 1, d),
                                                    strides=(es, es), writeable=True)
        self._value_rows = layout.page_tokens * d  # V block follows the page's K block
        self._io = Inflight.of(client)
        self._io.pipelines.add(self)
        # Tokens written into the open reservation whose Commit has not been sent (commit_every):
        # how many, their ids (None: sent without ids), and the steps they came from.
        self._unsent = 0
        self._unsent_ids: Optional[list] = None
        self._unsent_steps = (0, 0)
        self._res: Optional[_Reservation] = None
        self._reserve_rid: Optional[int] = None  # a Reserve sent, reply not yet taken
        self._reserve_step = 0
        self._commits: deque = deque()  # request ids of unanswered commits, oldest first
        self._stored: Optional[np.ndarray] = None  # indices of heads that store something (None: all of them)
        self.steps = 0
        self.sent_length = now.length  # the length once every commit sent applies
        self.confirmed_length = now.length  # the length in the last successful commit reply
        self.failed: Optional[PipelineError] = None
        self._closed = False

    # ----------------------------------------------------------------------------------------

    def append(self, keys: Any, values: Any, token_ids: Optional[Iterable[int]] = None) -> None:
        """Write ``keys``/``values`` ``[layers, kv_heads, tokens, head_dim]`` (the model's dtype;
        NumPy or CPU torch) into reserved slots and send their Commit without waiting.
        Raises the :class:`PipelineError` of an earlier step the daemon refused. An append of more
        tokens than are left reserved is committed in two pieces (each all or nothing)."""
        if self._closed:
            raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: the pipeline is closed")
        k, v = as_array(keys), as_array(values)
        L = self.layout
        want = (L.layers, L.kv_heads, L.head_dim)
        for name, a in (("keys", k), ("values", v)):
            if a.ndim != 4 or (a.shape[0], a.shape[1], a.shape[3]) != want or a.dtype != self._dtype:
                raise KvdError(ErrorCode.INVALID_ARGUMENT,
                               f"kvd: {name} must be [{want[0]}, {want[1]}, tokens, {want[2]}] "
                               f"{self._dtype} (model {L.name}); got {list(a.shape)} {a.dtype}")
        if k.shape != v.shape:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: keys {list(k.shape)} and values {list(v.shape)} differ")
        n = k.shape[2]
        if n < 1:
            raise KvdError(ErrorCode.INVALID_ARGUMENT, "kvd: zero tokens to append")
        ids = wire.token_ids(token_ids) if token_ids is not None else b""
        if token_ids is not None and len(ids) != 4 * n:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: {len(ids) // 4} token ids for {n} tokens")
        heads = L.layers * L.kv_heads
        k = k.reshape(heads, n, L.head_dim)
        v = v.reshape(heads, n, L.head_dim)
        with self.client._io:
            self._check_failed()
            step = self.steps
            done = 0
            while done < n:
                # Room in the window first: an older step's failure surfaces before this one sends.
                while len(self._commits) >= self.max_in_flight:
                    self._io.collect_locked(until=self._commits[0])
                    self._check_failed()
                res = self._reservation_locked(n - done, step)
                m = min(n - done, res.remaining)
                rows = res.rows[:, res.used:res.used + m].reshape(-1)
                ks, vs = k[:, done:done + m], v[:, done:done + m]
                if self._stored is not None:
                    ks, vs = ks[self._stored], vs[self._stored]
                self._win[rows] = ks.reshape(-1, L.head_dim)
                self._win[rows + self._value_rows] = vs.reshape(-1, L.head_dim)
                self._wrote(res, m, ids[4 * done:4 * (done + m)] if token_ids is not None else None, step)
                done += m
            self.steps += 1

    def flush(self) -> None:
        """Wait for every reply; raise the first failure not raised yet (and, after a failed
        commit, that failure again)."""
        with self.client._io:
            self._io.collect_locked()
            self._check_failed()

    def close(self) -> None:
        """Flush, then abort what is still reserved (its pages go back to the arena). Raises a
        failure that was never raised before; idempotent."""
        if self._closed:
            return
        pending: Optional[KvdError] = None
        try:
            with self.client._io:
                self._io.collect_locked()
        except KvdError as e:
            pending = e
        self._closed = True
        self._io.pipelines.discard(self)
        res, self._res = self._res, None
        if res is not None:
            try:
                self.client.commit(self.seq, res.rid, abort=True)
            except KvdError as e:
                if self.failed is None:  # after a failure the reservation is often gone already
                    pending = pending or e
        if pending is None and self.failed is not None and not self.failed.reported:
            pending = self.failed
        if pending is not None:
            pending.reported = True
            raise pending

    def __enter__(self) -> "AppendPipeline":
        return self

    def __exit__(self, exc_type: Optional[type], *rest: object) -> None:
        try:
            self.close()
        except KvdError:
            if exc_type is None:
                raise  # otherwise the exception already on its way matters more

    # ----------------------------------------------------------------------------------------

    def _check_failed(self) -> None:
        if self.failed is not None:
            self.failed.reported = True
            raise self.failed

    def _reservation_locked(self, need: int, step: int) -> _Reservation:
        if self._res is not None and self._res.remaining > 0:
            return self._res
        if self._reserve_rid is None:
            self._send_reserve(max(self.reserve_ahead, need), step)
        self._io.collect_locked(until=self._reserve_rid)
        self._check_failed()
        assert self._res is not None  # set by the reply, or collect raised its failure
        return self._res

    def _send_reserve(self, tokens: int, step: int) -> None:
        req = self.client._new_request()
        req.reserve.CopyFrom(append_pb2.ReserveRequest(sequence_id=self.seq, num_tokens=tokens))
        rid = req.request_id
        self._reserve_rid = rid
        self._reserve_step = step

        def on_reply(resp: Any) -> Optional[KvdError]:
            if self._reserve_rid == rid:
                self._reserve_rid = None
            err = self._error_of(resp, "reserve")
            if err is not None:
                # Not sticky: nothing was reserved; the next append asks again.
                return PipelineError(err, "reserve", step, self.seq, self.sent_length,
                                     tokens, self.confirmed_length)
            self._open(resp.reserve)
            return None

        self._io.send_locked(req, on_reply)

    def _open(self, r: append_pb2.ReserveResponse) -> None:
        L = self.layout
        ids, slots = reservation_pages(r.heads, L.layers, L.kv_heads)
        stored = [h for h, x in enumerate(ids) if x is not None]
        self._stored = None if len(stored) == len(ids) else np.asarray(stored)
        info = self.client.arena.info
        P, d, es = r.page_tokens, L.head_dim, self._dtype.itemsize
        if P != L.page_tokens:
            raise KvdError(ErrorCode.INTERNAL, f"kvd: reserve says {P} tokens per page, "
                                               f"the model {L.page_tokens}")
        t = np.arange(r.num_tokens, dtype=np.int64)
        rows = np.empty((len(stored), r.num_tokens), dtype=np.int64)
        for i, h in enumerate(stored):
            at = slots[h] + t
            head_pages = ids[h]
            assert head_pages is not None  # `stored` lists only heads with pages
            page = head_pages[at // P]
            if page.size and int(page.max()) >= info.page_count:
                raise KvdError(ErrorCode.INTERNAL, "kvd: reserve names a page outside the arena")
            rows[i] = (page * info.page_bytes) // es + (at % P) * d
        self._res = _Reservation(r.reservation_id, r.num_tokens, rows)

    def _wrote(self, res: _Reservation, m: int, ids: Optional[bytes], step: int) -> None:
        """`m` tokens were written at the reservation's next slots: commit them now, or with the
        next ones (commit_every)."""
        if self._unsent and (ids is None) != (self._unsent_ids is None):
            self.send_pending_locked()  # one Commit carries ids for all its tokens or none
        if not self._unsent:
            self._unsent_ids = None if ids is None else []
            self._unsent_steps = (step, step)
        self._unsent += m
        self._unsent_steps = (self._unsent_steps[0], step)
        if ids is not None:
            assert self._unsent_ids is not None  # set with the first unsent token above
            self._unsent_ids.append(ids)
        res.used += m
        res.remaining -= m
        if self._unsent >= self.commit_every or res.remaining == 0:
            self.send_pending_locked()

    def send_pending_locked(self) -> None:
        """Send the Commit of the tokens written and not committed yet, if any (client._io held):
        Inflight calls it before any other request goes out."""
        if not self._unsent or self._res is None:
            return
        res, m = self._res, self._unsent
        ids = b"".join(self._unsent_ids) if self._unsent_ids is not None else b""
        steps = self._unsent_steps
        self._unsent, self._unsent_ids = 0, None
        req = self.client._new_request()
        cr = req.commit  # set in place: a per-step CopyFrom cost more than the rest of the message
        cr.sequence_id = self.seq
        cr.reservation_id = res.rid
        cr.num_tokens = m
        cr.keep_reserved = True
        if ids:
            cr.token_ids = ids
        rid = req.request_id
        first = self.sent_length

        def on_reply(resp: Any) -> Optional[KvdError]:
            try:
                self._commits.remove(rid)
            except ValueError:
                pass
            err = self._error_of(resp, "commit")
            if err is not None:
                if self.failed is not None:
                    return None  # a consequence of the first failure, already on its way
                self.failed = PipelineError(err, "commit", steps[0], self.seq, first, m,
                                            self.confirmed_length, last_step=steps[1])
                return self.failed
            self.confirmed_length = resp.commit.length
            return None

        self._io.send_locked(req, on_reply)
        self._commits.append(rid)
        self.sent_length += m
        if res.remaining == 0:
            # The daemon closes a reservation with its last commit: ask for the next one now, so
            # its reply is (usually) here before the step that needs it.
            self._res = None
            self._send_reserve(self.reserve_ahead, steps[1] + 1)

    @staticmethod
    def _error_of(resp: Any, kind: str) -> Optional[KvdError]:
        if isinstance(resp, KvdError):
            return resp
        which = resp.WhichOneof("body")
        if which == "error":
            return KvdError(resp.error.code, resp.error.message, resp.header.request_id)
        if which != kind:
            return KvdError(ErrorCode.INTERNAL, f"kvd: asked for {kind!r}, the daemon replied "
                                                f"with {which!r}", resp.header.request_id)
        return None
