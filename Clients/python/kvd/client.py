"""The kvd client: one ZeroMQ DEALER socket, one request in flight at a time.

A ``Client`` is not thread-safe; give each thread its own. (Its own keep-alive thread is safe: every
use of the socket holds one lock, so a KeepAlive never interleaves with a call.)
"""

from __future__ import annotations

import itertools
import numbers
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

import numpy as np
import zmq
from google.protobuf.message import DecodeError

from kvd import curve, dtypes
from kvd.errors import ErrorCode, KvdError, error_for
from kvd.events import Events
from kvd.keepalive import CANCEL_POLL_MS, KeepAliveResult, KeepAliveThread
from kvd.shm import Arena
from kvd.v1 import (admin_pb2, append_pb2, common_pb2, compact_pb2, envelope_pb2, hello_pb2, memory_pb2,
                    prefix_pb2, query_pb2, remote_pb2, sequence_pb2, stats_pb2)
from kvd import wire
from kvd import results
from kvd.views import PagedHead, HeadData, QueryResult

PROTOCOL_VERSION = 1
# In the PERMISSION_DENIED a daemon answers a connection that has not said Hello to its tenant
# (docs/PROTOCOL.md): after a restart, the client says Hello again and resends.
NOT_BOUND = "not bound to a tenant"

_MODES: Dict[str, int] = {
    "pages": query_pb2.QUERY_MODE_PAGES,
    "inline": query_pb2.QUERY_MODE_INLINE,
    "gather": query_pb2.QUERY_MODE_GATHER,
    "metadata": query_pb2.QUERY_MODE_METADATA,
}
_MODE_NAMES: Dict[int, str] = {v: k for k, v in _MODES.items()}
_MODE_NAMES[query_pb2.QUERY_MODE_UNSPECIFIED] = "pages"  # the server's default


def _param(name: str, value: Union[bool, int, float, str]) -> common_pb2.Param:
    """A compaction Param from a Python value; bool is checked before int (bool is an int)."""
    p = common_pb2.Param(name=name)
    if isinstance(value, (bool, np.bool_)):
        p.bool_value = bool(value)
    elif isinstance(value, numbers.Integral):
        p.int_value = int(value)
    elif isinstance(value, numbers.Real):
        p.float_value = float(value)
    elif isinstance(value, str):
        p.string_value = value
    else:
        raise TypeError(f"compaction parameter {name}={value!r}: expected int, float, bool or str")
    return p


def _fill_tensor(t: common_pb2.Tensor, arr: np.ndarray) -> None:
    """Encode a K or V array into Tensor ``t`` {dtype, shape, data} (little-endian, row-major)."""
    a = dtypes.wire_array(arr)
    t.dtype = dtypes.from_numpy(a.dtype)
    t.shape.extend(a.shape)
    t.data = a.tobytes()


def _tensor(arr: np.ndarray) -> common_pb2.Tensor:
    """A standalone Tensor for ``arr`` (for hand-built requests)."""
    t = common_pb2.Tensor()
    _fill_tensor(t, arr)
    return t


class Client:
    """Talks to one kvd daemon.

    ``endpoint`` is a ZeroMQ address such as ``"ipc:///tmp/kvd-default.sock"``. Every call waits up
    to ``timeout_ms`` for its reply and raises :class:`KvdError` (code ``UNAVAILABLE``) when none
    comes. Shared memory is mapped by :meth:`hello`, which the methods that need it call on demand.

    ``tenant`` and ``token`` are sent in Hello (the tenant to use and its secret). For a tcp
    endpoint secured with CURVE, give ``curve_server_key`` (the daemon's public key) and this
    client's ``curve_public_key`` / ``curve_secret_key`` (Z85 text, e.g. from
    :func:`kvd.load_curve_keypair`); a daemon that does not accept the key never answers, so calls
    time out. ``admin_token`` (the daemon's ``admin.token``) binds this connection as admin for
    ``tenant`` instead of its token, for :meth:`reload` and :meth:`evict` (docs/SECURITY.md).

    ``keepalive`` (default on): when the daemon runs with leases (Hello's ``limits.lease_ms``), a
    daemon thread sends a KeepAlive whenever this client has sent nothing for a third of the lease,
    so an idle client keeps its sequences. It starts with the first Hello (which
    :meth:`create_sequence` and :meth:`keep_alive` say first if the client has not). It stops on
    :meth:`close`, when the client is garbage collected, and with the process.
    ``keepalive=False``: renew by making calls (any request renews) or with :meth:`keep_alive`.
    """

    def __init__(self, endpoint: str, timeout_ms: int = 5000, *, client_name: str = "kvd-python",
                 context: Optional[zmq.Context] = None, tenant: str = "", token: str = "",
                 curve_server_key: Union[str, bytes, None] = None,
                 curve_public_key: Union[str, bytes, None] = None,
                 curve_secret_key: Union[str, bytes, None] = None,
                 keepalive: bool = True, admin_token: str = ""):
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_ms)
        self.client_name = client_name
        # Credentials are kept for the client's lifetime: every socket it opens (also after a
        # timeout) uses the CURVE keys, every Hello (also after a daemon restart) the tenant/token.
        self.tenant = tenant
        self._token = token
        self._admin_token = admin_token
        self._curve = curve.client_keys(curve_server_key, curve_public_key, curve_secret_key)
        self._ctx = context or zmq.Context.instance()
        self._sock: Optional[zmq.Socket] = None
        self._poller = zmq.Poller()
        self._ids = itertools.count(1)  # request ids: non-zero, never reused by this client
        self._arena: Optional[Arena] = None
        self._hello: Optional[hello_pb2.HelloResponse] = None
        self._models: Dict[str, Any] = {}    # model name -> ModelLayout, from Hello
        self._seq_models: Dict[int, str] = {}  # sequence id -> model name, for sequences this client created
        # Every use of the socket holds _io: the keep-alive thread shares it with the caller's.
        self._io = threading.Lock()
        self._last_send = 0.0  # time.monotonic() of the last request sent (keep-alive idleness)
        self._lease_ms = 0     # from the last Hello; 0 = the daemon runs without leases
        self._keepalive_wanted = bool(keepalive)
        self._keepalive: Optional[KeepAliveThread] = None
        # The daemon process answering (ResponseHeader.instance_id); a change is a restart.
        self._instance = 0
        self._restarted = False
        self._open_socket()

    # ----------------------------------------------------------------------------------------
    # transport

    def _open_socket(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)  # never block close() on undelivered requests
        if self.endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)  # ZeroMQ resolves IPv6 literals only when asked to
        if self._curve is not None:
            # Must precede connect(): the connection's mechanism is fixed when it is made.
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
        sock.connect(self.endpoint)
        self._sock = sock
        # One poller per socket: Socket.poll builds and registers a new Poller on every call,
        # a fixed cost in each round trip.
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)

    def _reset_socket(self) -> None:
        # After a timeout the old socket may still receive the late reply; a fresh socket (new
        # identity) keeps it from being mistaken for the next call's answer and drops queued sends.
        if self._sock is not None:
            self._sock.close(linger=0)
        self._open_socket()

    def call(self, kind: str, body: Any) -> Any:
        """Send ``Request{<kind>: body}`` and return the matching response body.

        ``kind`` is the oneof field name (``"hello"``, ``"append"``, ...). Raises KvdError with the
        daemon's code on an error reply, or UNAVAILABLE when no reply comes within the timeout.
        """
        req = self._new_request()
        getattr(req, kind).CopyFrom(body)
        return self._send(kind, req)

    def _new_request(self) -> envelope_pb2.Request:
        if self._sock is None:
            raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: client is closed")
        return envelope_pb2.Request(request_id=next(self._ids), protocol_version=PROTOCOL_VERSION)

    def _send(self, kind: str, req: envelope_pb2.Request,
              payload_for: Optional[Callable[[envelope_pb2.Request], bytes]] = None) -> Any:
        """Round trip of a request whose body ``kind`` is already set, or whose serialized form
        ``payload_for(req)`` builds (inline appends, assembled by ``kvd.wire`` without extra copies).

        When the reply comes from a daemon that restarted since the last one (a durable kvd that
        adopted its segment), the client first rejoins it (:meth:`_rejoin`); a request the new
        daemon refused only because this connection is not bound to a tenant yet is sent again,
        once, with a new id."""
        resp = self._roundtrip(req, payload_for(req) if payload_for else None)
        if self._restarted and kind != "hello":
            self._rejoin(map_arena=True)
            if resp.WhichOneof("body") == "error" and NOT_BOUND in resp.error.message:
                req.request_id = next(self._ids)
                resp = self._roundtrip(req, payload_for(req) if payload_for else None)
        return self._body(kind, resp, req.request_id)

    def _note_instance(self, resp: envelope_pb2.Response) -> None:
        instance = resp.header.instance_id
        if instance and self._instance and instance != self._instance:
            self._restarted = True
        if instance:
            self._instance = instance

    def _rejoin(self, map_arena: bool) -> None:
        """After a daemon restart: say Hello again (binds this connection to its tenant; re-maps
        the segment if the daemon made a new one) and take back the sequences this client created
        (KeepAlive adopt): a restarted daemon's leases start afresh, owned by nobody, and would
        otherwise run out. Sequences the daemon no longer has are forgotten."""
        self._restarted = False
        if map_arena:
            self.hello()
        else:
            self._exchange_hello()  # the keep-alive thread never re-maps under the caller's views
        known = list(self._seq_models)
        for start in range(0, len(known), 4096):
            result = self.keep_alive(known[start:start + 4096])
            for seq in result.missing:
                self._seq_models.pop(seq, None)

    @staticmethod
    def _body(kind: str, resp: envelope_pb2.Response, rid: int) -> Any:
        which = resp.WhichOneof("body")
        if which == "error":
            raise error_for(resp.error.code, resp.error.message, rid)
        if which != kind:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: asked for {kind!r}, the daemon replied with {which!r}", rid)
        return getattr(resp, kind)

    def _roundtrip(self, req: envelope_pb2.Request, payload: Optional[bytes] = None) -> envelope_pb2.Response:
        with self._io:
            if self._sock is None:  # closed meanwhile (by another thread)
                raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: client is closed")
            return self._roundtrip_locked(req, payload, None)

    def _roundtrip_locked(self, req: envelope_pb2.Request, payload: Optional[bytes],
                          cancel: Optional[threading.Event]) -> envelope_pb2.Response:
        # ``cancel`` (the keep-alive thread's stop request) is looked at while waiting, so close()
        # does not wait a whole timeout for a KeepAlive the daemon does not answer.
        inflight = getattr(self, "_inflight", None)
        if inflight is not None and inflight.pending:
            # Pipelined replies are due (kvd.pipeline): take them first, so none is dropped as late
            # and none is taken for this request's; a failed pipelined step raises here.
            inflight.collect_locked(cancel)
        sock = self._sock
        assert sock is not None  # callers hold _io and checked
        self._last_send = time.monotonic()
        if payload is None:
            sock.send(req.SerializeToString())
        else:
            sock.send(payload, copy=False)  # ZeroMQ references the bytes instead of copying
        deadline = self._last_send + self.timeout_ms / 1000.0
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if cancel is not None and remaining > 0:
                if cancel.is_set():
                    raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: client is closing",
                                   req.request_id)
                remaining = min(remaining, CANCEL_POLL_MS)
                if not self._poller.poll(remaining):
                    continue
            elif remaining <= 0 or not self._poller.poll(remaining):
                self._reset_socket()
                hint = ("is the daemon running, is curve_server_key its public key, and does a "
                        "tenant list this client's curve_public_key? (a refused CURVE client gets "
                        "no reply)" if self._curve else "is the daemon running?")
                raise KvdError(ErrorCode.UNAVAILABLE,
                               f"kvd: no reply from {self.endpoint} within {self.timeout_ms} ms; "
                               f"{hint}", req.request_id)
            frames = sock.recv_multipart()
            resp = envelope_pb2.Response()
            try:
                resp.ParseFromString(frames[-1])
            except DecodeError:
                raise KvdError(ErrorCode.INTERNAL,
                               f"kvd: undecodable reply ({len(frames[-1])} bytes) from "
                               f"{self.endpoint}", req.request_id) from None
            if resp.header.request_id == req.request_id:
                self._note_instance(resp)
                return resp
            if resp.header.request_id == 0 and resp.WhichOneof("body") == "error":
                # The daemon could not read our request (e.g. too large or undecodable) and so
                # could not echo its id. This socket only ever has this one request in flight
                # (it is replaced after a timeout), so the error is ours.
                self._note_instance(resp)
                return resp
            # Otherwise: the late reply of an earlier call that timed out; drop it and keep waiting.

    # ----------------------------------------------------------------------------------------
    # session

    def hello(self) -> hello_pb2.HelloResponse:
        """Negotiate the protocol, learn models/methods/limits and map the shared-memory arena."""
        resp = self._exchange_hello()
        shm = resp.shm
        if (self._arena is None or self._arena.info.name != shm.name
                or self._arena.info.arena_generation != shm.arena_generation):
            # First Hello, or the daemon restarted and created a new segment: (re)map.
            if self._arena is not None:
                self._arena.close()
                self._arena = None
            self._arena = Arena(shm)
        return resp

    def _exchange_hello(self) -> hello_pb2.HelloResponse:
        """Hello without mapping: the session's facts (models, limits, lease), and the keep-alive
        thread when the daemon has leases."""
        resp = self.call("hello", hello_pb2.HelloRequest(protocol_versions=[PROTOCOL_VERSION],
                                                         client_name=self.client_name,
                                                         tenant=self.tenant, token=self._token,
                                                         admin_token=self._admin_token))
        self._hello = resp
        self._models = {m.name: m for m in resp.models}
        self._lease_ms = resp.limits.lease_ms
        if self._keepalive_wanted and self._lease_ms > 0 and self._keepalive is None:
            self._keepalive = KeepAliveThread(self)
        return resp

    def _learn_lease(self) -> None:
        # Only Hello tells the lease, so with keep-alive on, a client about to own sequences says
        # Hello first if it has not (as the C client always does); without mapping the arena, so
        # a client on another host still works.
        if self._keepalive_wanted and self._hello is None:
            self._exchange_hello()

    @property
    def arena(self) -> Arena:
        """The mapped arena (calls :meth:`hello` first if needed)."""
        if self._arena is None:
            self.hello()
        assert self._arena is not None  # hello() maps it
        return self._arena

    @property
    def models(self) -> dict:
        """Model name -> ``ModelLayout`` as listed by the last Hello."""
        if self._hello is None:
            self.hello()
        return dict(self._models)

    # ----------------------------------------------------------------------------------------
    # sequences

    def create_sequence(self, model: str, sequence_id: int = 0, tenant: str = "",
                        pinned: bool = False, adopt_token_ids: Optional[Iterable[int]] = None) -> int:
        """Create an empty sequence of ``model``; returns its id (``sequence_id`` or the server's).
        ``pinned``: create it pinned (see :meth:`pin`). ``adopt_token_ids`` (the prompt's token
        ids): start with the longest cached prefix of them; :meth:`create_sequence_ex` also tells
        how many tokens that was."""
        return self.create_sequence_ex(model, sequence_id, tenant, pinned,
                                       adopt_token_ids).sequence_id

    def create_sequence_ex(self, model: str, sequence_id: int = 0, tenant: str = "",
                           pinned: bool = False,
                           adopt_token_ids: Optional[Iterable[int]] = None) -> results.CreateResult:
        """:meth:`create_sequence`, returning the whole response: ``.sequence_id`` and
        ``.adopted_tokens`` (tokens taken from the prefix cache, a multiple of the model's
        page_tokens, 0 on a miss or without ``adopt_token_ids``: the sequence's length; append the
        rest of the prompt from that position)."""
        self._learn_lease()
        req = sequence_pb2.CreateSequenceRequest(model=model, sequence_id=sequence_id,
                                                 tenant=tenant, pinned=pinned)
        if adopt_token_ids is not None:
            req.adopt_token_ids = wire.token_ids(adopt_token_ids)
        resp = self.call("create_sequence", req)
        self._seq_models[resp.sequence_id] = model
        return results.CreateResult.from_pb(resp)

    def release(self, seq: int) -> results.ReleaseResult:
        """Free every page, reservation and staging buffer of ``seq``; the id becomes unknown."""
        resp = self.call("release", sequence_pb2.ReleaseRequest(sequence_id=seq))
        self._seq_models.pop(seq, None)
        return results.ReleaseResult.from_pb(resp)

    def stats(self, seq: int = 0) -> results.Stats:
        """Arena-wide statistics, plus ``.sequence`` detail when ``seq`` is non-zero
        (``.prefix``: this tenant's prefix cache)."""
        return results.Stats.from_pb(self.call("stats", stats_pb2.StatsRequest(sequence_id=seq)))

    # ----------------------------------------------------------------------------------------
    # prefix reuse (docs/PREFIX.md)

    def lookup(self, model: str, token_ids: Iterable[int]) -> int:
        """Tokens of the longest prefix of ``token_ids`` whose K/V this tenant's prefix cache holds
        for ``model`` (whole pages; 0 on a miss). Changes nothing but the blocks' recency."""
        return self.lookup_ex(model, token_ids).tokens

    def lookup_ex(self, model: str, token_ids: Iterable[int]) -> results.LookupResult:
        """:meth:`lookup`, returning ``tokens``, ``pages_per_head`` and ``page_tokens``."""
        return results.LookupResult.from_pb(self.call("lookup", prefix_pb2.LookupRequest(
            model=model, token_ids=wire.token_ids(token_ids))))

    def fork(self, seq: int, length: int, new_sequence_id: int = 0) -> int:
        """A new sequence holding the first ``length`` tokens of ``seq`` (whole pages shared
        copy-on-write, a partly filled last page copied); returns its id (``new_sequence_id`` or
        the server's). ``seq`` must never have been compacted or aliased."""
        return self.fork_ex(seq, length, new_sequence_id).sequence_id

    def fork_ex(self, seq: int, length: int, new_sequence_id: int = 0) -> results.ForkResult:
        """:meth:`fork`, returning the new ``sequence_id``, its ``length`` and ``generation``."""
        resp = self.call("fork", prefix_pb2.ForkRequest(sequence_id=seq, length=length,
                                                        new_sequence_id=new_sequence_id))
        if seq in self._seq_models:
            self._seq_models[resp.sequence_id] = self._seq_models[seq]
        return results.ForkResult.from_pb(resp)

    def restore(self, seq: int, model: Optional[str] = None) -> results.RestoreResult:
        """Bring back ``seq`` after the memory manager evicted it to the remote tier (its id then
        answers EVICTED saying so): same id, length, generation and K/V, in fresh pages. Returns
        ``.length``, ``.generation``, ``.from_remote`` (False: it had not left this daemon's queue
        yet) and ``.restore_us``. EVICTED when the store no longer has it or its copy is corrupted
        (then it is lost); UNAVAILABLE when the store does not answer. ``model``: remembered for
        zero-copy appends when this client did not create ``seq``."""
        resp = self.call("restore", remote_pb2.RestoreRequest(sequence_id=seq))
        if model is not None:
            self._seq_models[seq] = model
        return results.RestoreResult.from_pb(resp)

    # ----------------------------------------------------------------------------------------
    # leases, pins, events

    def keep_alive(self, adopt: Iterable[int] = ()) -> KeepAliveResult:
        """Renew the lease of everything this connection owns (any call does; this one does
        nothing else) and adopt the sequences in ``adopt``: they become this connection's, e.g.
        after a reconnect or when another process hands them over. Sequences that do not exist
        are listed in ``missing``, not an error."""
        self._learn_lease()
        resp = self.call("keep_alive", memory_pb2.KeepAliveRequest(sequence_ids=list(adopt)))
        return KeepAliveResult(resp.lease_ms, resp.adopted, list(resp.missing))

    def pin(self, seq: int, pinned: bool = True) -> results.PinResult:
        """Pin ``seq`` (or unpin with ``pinned=False``): the memory manager never compacts or
        evicts a pinned sequence. Its pages count against the tenant's ``quota_pinned_pages``;
        an orphan past its grace period is released even when pinned. Returns ``.pinned`` and
        ``.pinned_pages`` (the tenant's pages in pinned sequences now)."""
        return results.PinResult.from_pb(
            self.call("pin", memory_pb2.PinRequest(sequence_id=seq, pinned=pinned)))

    def unpin(self, seq: int) -> results.PinResult:
        """``pin(seq, False)``."""
        return self.pin(seq, False)

    # ----------------------------------------------------------------------------------------
    # operating kvd (admin.proto; what kvctl sends)
    def list_sequences(self) -> results.SequenceList:
        """Every live sequence of this client's tenant (``.sequences``: SequenceStats, by id)."""
        return results.SequenceList.from_pb(
            self.call("list_sequences", admin_pb2.ListSequencesRequest()))

    def list_policies(self) -> results.PolicyList:
        """The policies, rules and per-model default policies in force."""
        return results.PolicyList.from_pb(self.call("list_policies", admin_pb2.ListPoliciesRequest()))

    def reload(self) -> results.ReloadResult:
        """Reload policies, rules and memory settings from the daemon's config (as SIGHUP).
        Needs an admin connection (``admin_token=``, docs/SECURITY.md)."""
        return results.ReloadResult.from_pb(self.call("reload", admin_pb2.ReloadRequest()))

    def evict(self, seq: int) -> results.EvictResult:
        """Evict ``seq`` now, as the memory manager would (admin)."""
        return results.EvictResult.from_pb(self.call("evict", admin_pb2.EvictRequest(sequence_id=seq)))

    def events(self) -> Events:
        """A subscriber to this tenant's memory-manager events on the endpoint Hello names (with
        this client's CURVE keys). Raises FAILED_PRECONDITION when the daemon publishes none.
        Call ``.ready()`` before relying on an event: see :class:`kvd.Events`."""
        hello = self._hello if self._hello is not None else self._exchange_hello()
        if not hello.events_endpoint:
            raise KvdError(ErrorCode.FAILED_PRECONDITION,
                           f"kvd: the daemon at {self.endpoint} publishes no events "
                           f"(its memory.events_endpoint is empty)")
        tenant = hello.tenant or self.tenant
        server, public, secret = self._curve or (None, None, None)
        # Topics are "kvd.<tenant>"; without a known tenant, every tenant's events.
        return Events(hello.events_endpoint, f"kvd.{tenant}" if tenant else "kvd.",
                      exact_topic=bool(tenant), context=self._ctx, curve_server_key=server,
                      curve_public_key=public, curve_secret_key=secret)

    @property
    def lease_ms(self) -> int:
        """The lease Hello reported (0 before Hello, or when the daemon runs without leases)."""
        return self._lease_ms

    @property
    def keepalive_error(self) -> Optional[BaseException]:
        """The last error of the automatic keep-alive (None if its last KeepAlive worked or it is
        not running). A failed renewal is retried; this is for diagnostics."""
        ka = self._keepalive
        return ka.last_error if ka is not None else None

    def _keepalive_interval_s(self) -> float:
        return self._lease_ms / 3000.0

    def _keepalive_tick(self, ka: KeepAliveThread) -> float:
        """Called by the keep-alive thread: send a KeepAlive if the client has been quiet for a
        third of the lease. Returns the seconds until it should be called again."""
        interval = self._keepalive_interval_s()
        if interval <= 0:
            return 1.0  # a restarted daemon runs without leases now; look again later
        idle = time.monotonic() - self._last_send
        if idle < interval:
            return interval - idle
        if not self._io.acquire(blocking=False):
            return interval  # a call is in flight, and it renews the lease itself
        try:
            if self._sock is None or ka.stopping.is_set():
                return interval
            req = self._new_request()
            req.keep_alive.SetInParent()
            self._body("keep_alive", self._roundtrip_locked(req, None, ka.stopping), req.request_id)
            ka.last_error = None
        finally:
            self._io.release()
        if self._restarted:
            self._rejoin(map_arena=False)
        return interval

    # ----------------------------------------------------------------------------------------
    # appending

    def append(self, seq: int, keys: np.ndarray, values: np.ndarray, zero_copy: bool = False,
               token_ids: Optional[Iterable[int]] = None) -> results.AppendResult:
        """Append tokens; ``keys``/``values`` are ``[layers, kv_heads, tokens, head_dim]``.

        dtype float16, ml_dtypes.bfloat16 or float32 (the model's). Inline (default): the bytes
        travel in the message and the daemon validates everything. ``zero_copy``: Reserve, write
        every head's tokens straight into the arena, then Commit (aborted if the write or the Commit fails).
        ``token_ids`` (ints, one per token appended): index the pages that fill in the prefix
        cache (sent on the Append, or on the Commit with ``zero_copy``); an append without them
        stops the indexing of ``seq`` for good.
        Returns an :class:`~kvd.results.AppendResult` (``length``, ``first_position``, ``generation``).
        """
        ids = b""
        if token_ids is not None:
            ids = wire.token_ids(token_ids)
            tokens = np.shape(keys)[2] if np.ndim(keys) == 4 else None
            if tokens is not None and len(ids) // 4 != tokens:
                raise KvdError(ErrorCode.INVALID_ARGUMENT,
                               f"kvd: {len(ids) // 4} token ids for {tokens} tokens")
        if not zero_copy:
            req = self._new_request()
            return results.AppendResult.from_pb(self._send("append", req, lambda r: wire.inline_append(
                r.request_id, r.protocol_version, seq, keys, values, ids)))

        k, v = dtypes.wire_array(keys), dtypes.wire_array(values)
        if k.ndim != 4 or k.shape != v.shape or k.dtype != v.dtype:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: zero-copy append needs keys and values of one shape "
                           f"[layers, kv_heads, tokens, head_dim] and dtype; got {k.shape} "
                           f"{k.dtype} and {v.shape} {v.dtype}")
        arena = self.arena  # maps the segment (Hello) first, which also loads the model layouts
        self._check_layout(seq, k)
        res = self.reserve(seq, k.shape[2])
        try:
            arena.write_reservation(res, k, v)
            return self.commit(seq, res.reservation_id, res.num_tokens, token_ids=token_ids)
        except BaseException:
            # Whatever failed after the Reserve (the write, or a refused Commit), the reservation
            # must not stay open: it would block this sequence's next append until its lease ends.
            # After a timed-out Commit that did land, the abort is refused and changes nothing.
            try:
                self.commit(seq, res.reservation_id, abort=True)
            except KvdError:
                pass  # the original failure is the one worth reporting
            raise

    def _check_layout(self, seq: int, k: np.ndarray) -> None:
        # The daemon cannot see zero-copy bytes, so check shape/dtype here when the model is known;
        # a wrong head_dim would otherwise write runs of the wrong length.
        model = self._models.get(self._seq_models.get(seq, ""))
        if model is None:
            return
        want = (model.layers, model.kv_heads, model.head_dim)
        got = (k.shape[0], k.shape[1], k.shape[3])
        if got != want or dtypes.from_numpy(k.dtype) != model.dtype:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: model {model.name} needs [{want[0]}, {want[1]}, tokens, "
                           f"{want[2]}] {dtypes.to_numpy(model.dtype)}; got {list(k.shape)} "
                           f"{k.dtype}")
        if k.shape[2] == 0:
            raise KvdError(ErrorCode.INVALID_ARGUMENT, "kvd: zero tokens to append")

    def reserve(self, seq: int, num_tokens: int, slots: bool = False) -> results.ReserveResult:
        """Reserve ``num_tokens`` slots in every (layer, head); returns each head's page ids and
        first slot (and the verbose Slot runs too with ``slots=True``)."""
        return results.ReserveResult.from_pb(self.call("reserve", append_pb2.ReserveRequest(
            sequence_id=seq, num_tokens=num_tokens, slots=slots)))

    def commit(self, seq: int, reservation_id: int, num_tokens: int = 0,
               abort: bool = False, token_ids: Optional[Iterable[int]] = None,
               keep_reserved: bool = False) -> results.AppendResult:
        """Make the first ``num_tokens`` reserved tokens visible (or drop all with ``abort``).
        ``token_ids``: one per committed token, as in :meth:`append`. ``keep_reserved``: keep the
        rest reserved for later commits (``.reserved_remaining`` in the reply; kvd.pipeline)."""
        req = append_pb2.CommitRequest(sequence_id=seq, reservation_id=reservation_id,
                                       num_tokens=num_tokens, abort=abort,
                                       keep_reserved=keep_reserved)
        if token_ids is not None:
            req.token_ids = wire.token_ids(token_ids)
        return results.AppendResult.from_pb(self.call("commit", req))

    # ----------------------------------------------------------------------------------------
    # reading

    def query(self, seq: int, layers: Optional[Iterable[int]] = None,
              mode: Union[str, int] = "pages", copy: bool = False) -> QueryResult:
        """Read ``seq``; returns a :class:`QueryResult` with one :class:`HeadData` per (layer, head).

        ``mode``: "pages" (zero-copy views of each page run), "inline" (bytes in the reply),
        "gather" (contiguous copy in the staging area, viewed in place) or "metadata" (no K/V).
        ``copy=True`` detaches every array from shared memory and the reply.
        """
        mode_value: int
        if isinstance(mode, str):
            try:
                mode_value = _MODES[mode]
            except KeyError:
                raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}") from None
        else:
            mode_value = int(mode)
        needs_arena = mode_value in (query_pb2.QUERY_MODE_PAGES, query_pb2.QUERY_MODE_GATHER,
                                     query_pb2.QUERY_MODE_UNSPECIFIED)
        if needs_arena and self._arena is None:
            self.hello()
        req = self._new_request()
        q = req.query
        q.sequence_id = seq
        q.mode = mode_value  # type: ignore[assignment]  # a QueryMode is an int at run time
        if layers is not None:
            q.layers.extend(layers)
        # Positions as runs: a few bytes per head instead of 4 per token. A daemon that predates
        # the field ignores it and sends `positions`; _make_head reads either.
        q.position_runs = True
        resp = self._send("query", req)
        return self._result(resp, mode_value, copy)

    def _result(self, resp: query_pb2.QueryResponse, mode: int, copy: bool) -> QueryResult:
        dt = dtypes.to_numpy(resp.dtype)
        d = resp.head_dim
        page_tokens = resp.page_tokens
        arena = self._arena

        def make(hv: query_pb2.HeadView) -> HeadData:
            # Called once per head, the first time the caller touches it (QueryResult is lazy).
            n = hv.num_tokens
            runs = hv.position_runs
            if runs or not hv.positions:
                positions = wire.positions_from_runs(runs, n)
            else:
                positions = np.frombuffer(hv.positions, dtype="<i4")
            # An empty log_weights field means every log-weight is 0.
            log_weights = (np.frombuffer(hv.log_weights, dtype="<f4") if hv.log_weights
                           else np.zeros(n, dtype="<f4"))
            if len(positions) != n or len(log_weights) != n:
                raise KvdError(ErrorCode.INTERNAL,
                               f"kvd: head ({hv.layer}, {hv.head}) has {n} tokens but "
                               f"{len(positions)} positions / {len(log_weights)} log-weights")
            kp: Union[None, List[np.ndarray], PagedHead] = None
            vp: Union[None, List[np.ndarray], PagedHead] = None
            if mode == query_pb2.QUERY_MODE_INLINE:
                kp = [np.frombuffer(hv.keys, dtype=dt).reshape(n, d)]
                vp = [np.frombuffer(hv.values, dtype=dt).reshape(n, d)]
            elif mode == query_pb2.QUERY_MODE_GATHER:
                assert arena is not None  # query() mapped it
                kp = [arena.array(hv.gather_key_offset, n * d, dt, (n, d))]
                vp = [arena.array(hv.gather_value_offset, n * d, dt, (n, d))]
            elif mode in (query_pb2.QUERY_MODE_PAGES, query_pb2.QUERY_MODE_UNSPECIFIED):
                # Views are built lazily from the page ids: most callers want whole heads, which
                # one batched copy gives far faster than thousands of small views.
                kp = vp = PagedHead(arena, np.frombuffer(hv.page_ids, "<u4").astype(np.int64),
                                    n, d, dt, page_tokens)
            return HeadData(hv.layer, hv.head, n, d, dt, positions, log_weights, kp, vp,
                            aliased=hv.aliased, owner_layer=hv.owner_layer)

        result = QueryResult(resp.sequence_id, resp.generation, resp.length, dt, d,
                             _MODE_NAMES.get(mode, str(mode)), raw=resp, source=resp.heads,
                             make=make)
        return result.copy() if copy else result

    # ----------------------------------------------------------------------------------------
    # compaction

    def compact(self, seq: int, method: str = "", *, policy: str = "",
                queries: Optional[np.ndarray] = None, queries_in_shm: bool = False,
                **params: Any) -> results.CompactResult:
        """Compact ``seq``, e.g. ``compact(seq, "snapkv", queries=q, budget=64)``.

        ``method`` names a method (Hello lists them); else ``policy`` names a configured policy;
        with neither, kvd's rules or the model's default decide. ``queries``: the last w query
        vectors of every query head, ``[layers, q_heads, w, head_dim]`` (the model's dtype or
        float32) — needed by window-attention methods (snapkv, h2o, pyramidkv, adakv, headkv).
        ``queries_in_shm``: place them in the sequence's staging buffer (Stage) instead of the
        message. Remaining keyword arguments are method parameters (int/float/bool/str).
        """
        req = self._new_request()
        c = req.compact
        c.sequence_id = seq
        c.method = method
        c.policy = policy
        c.params.extend(_param(name, value) for name, value in params.items())
        if queries is not None:
            q = dtypes.wire_array(queries)
            if queries_in_shm:
                staged = self.stage(seq, q.nbytes)
                dst = self.arena.array(staged.offset, q.size, q.dtype, writable=True)
                dst[:] = q.reshape(-1)
                del dst
                c.queries_shm.dtype = dtypes.from_numpy(q.dtype)
                c.queries_shm.shape.extend(q.shape)
                c.queries_shm.offset = staged.offset
            else:
                _fill_tensor(c.queries, q)
        return results.CompactResult.from_pb(self._send("compact", req))

    def rank_layers(self, seqs: Iterable[int]) -> List[Tuple[int, int, float]]:
        """Layer pairs ``(layer, other, distance)`` by the distance of their caches averaged over
        ``seqs`` (a calibration set: same model, same length), most dissimilar first (KVSharer)."""
        resp = self.call("rank_layers", compact_pb2.RankLayersRequest(sequence_ids=list(seqs)))
        return [(p.layer, p.other, p.distance) for p in resp.pairs]

    def stage(self, seq: int, nbytes: int) -> results.StageResult:
        """The sequence's staging buffer, at least ``nbytes`` (``.offset`` in the arena, ``.bytes``).
        Query GATHER reuses the same buffer, so a gather overwrites what was staged."""
        return results.StageResult.from_pb(
            self.call("stage", compact_pb2.StageRequest(sequence_id=seq, bytes=nbytes)))

    # ----------------------------------------------------------------------------------------
    # lifetime

    def close(self) -> None:
        """Stop the keep-alive thread, close the socket and unmap the arena. Idempotent."""
        ka, self._keepalive = getattr(self, "_keepalive", None), None
        if ka is not None:
            ka.stop()
        io = getattr(self, "_io", None)
        # Another thread may hold _io mid-call; at interpreter exit it may be a frozen daemon
        # thread, so never wait long there (the socket then goes with the process).
        got = io is not None and io.acquire(
            timeout=0.1 if sys.is_finalizing() else self.timeout_ms / 1000.0 + 1.0)
        try:
            if got and self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
        finally:
            if got and io is not None:
                io.release()
        arena, self._arena = self._arena, None
        if arena is not None:
            arena.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
