"""Requests a :class:`kvd.Client` has sent without waiting for their replies (kvd.pipeline).

A client's DEALER socket carries one conversation. ``Client._roundtrip_locked`` drops a reply whose
request id is not the one it waits for (the late answer of a call that timed out), so before any
ordinary request goes out, every reply still owed to a pipeline is taken off the socket here and
handed to whoever sent that request. Replies may come back in another order than the requests went
out (kvd answers cheap requests on its socket thread and others from workers), so they are matched
by request id, never by position.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Dict, List, Optional

import zmq
from google.protobuf.message import DecodeError

from kvd.errors import ErrorCode, KvdError
from kvd.v1 import envelope_pb2

# Handler of one reply: gets the Response (or the KvdError that stands for a reply that never
# came) and returns the exception to raise for it, or None.
Handler = Callable[[Any], Optional[KvdError]]


class Inflight:
    """Reply handlers by request id, plus failures not yet raised to the caller. All methods run
    with the client's ``_io`` lock held (the caller's or the keep-alive thread's)."""

    def __init__(self, client: Any):
        self.client = client
        self.handlers: Dict[int, Handler] = {}
        self.unreported: List[KvdError] = []
        # Pipelines that may hold written tokens whose Commit is not sent yet (commit_every):
        # sent before anything else, so every request of the client sees them committed.
        self.pipelines: "weakref.WeakSet[Any]" = weakref.WeakSet()

    @staticmethod
    def of(client: Any) -> "Inflight":
        """The client's table, made on first use."""
        got = getattr(client, "_inflight", None)
        if got is None:
            got = Inflight(client)
            client._inflight = got
        return got

    @property
    def pending(self) -> bool:
        """Replies are due or a failure waits to be raised: the next request must collect first."""
        return (bool(self.handlers) or bool(self.unreported)
                or any(p._unsent for p in self.pipelines))

    def send_locked(self, req: envelope_pb2.Request, handler: Handler) -> None:
        """Send ``req`` without waiting; ``handler`` gets its reply when someone collects it."""
        c = self.client
        if c._sock is None:
            raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: client is closed")
        c._sock.send(req.SerializeToString())
        c._last_send = time.monotonic()
        self.handlers[req.request_id] = handler

    def collect_locked(self, cancel: Any = None, until: Optional[int] = None) -> None:
        """Take replies off the socket until request ``until`` is answered (None: until none is
        due), then raise the first failure collected, if any. ``cancel`` set (the keep-alive
        thread): failures are kept for the caller's next request instead of raised in that thread.
        """
        c = self.client
        try:
            for p in list(self.pipelines) if until is None else ():
                p.send_pending_locked()  # before another request: it then sees them committed
            while self.handlers and (until is None or until in self.handlers):
                self._take_one(c)
        finally:
            if self.unreported and cancel is None:
                first, self.unreported = self.unreported[0], []
                first.reported = True
                raise first

    def _take_one(self, c: Any) -> None:
        if not c._sock.poll(c.timeout_ms, zmq.POLLIN):
            # No reply at all: whether the daemon applied these requests is unknown. A fresh socket
            # keeps their late replies from being taken for later requests' (as Client does).
            lost = KvdError(ErrorCode.UNAVAILABLE,
                            f"kvd: no reply from {c.endpoint} within {c.timeout_ms} ms to a "
                            f"pipelined request; is the daemon running?")
            handlers, self.handlers = list(self.handlers.items()), {}
            c._reset_socket()
            for rid, h in handlers:
                self._note(h(KvdError(lost.code, lost.message, rid)))
            return
        frames = c._sock.recv_multipart()
        resp = envelope_pb2.Response()
        try:
            resp.ParseFromString(frames[-1])
            parsed = True
        except DecodeError:
            parsed = False
        if not parsed:
            rid = next(iter(self.handlers))
            h = self.handlers.pop(rid)
            self._note(h(KvdError(ErrorCode.INTERNAL,
                                  f"kvd: undecodable reply ({len(frames[-1])} bytes) from {c.endpoint}",
                                  rid)))
            return
        rid = resp.header.request_id
        if rid == 0 and resp.WhichOneof("body") == "error":
            # The daemon could not read a request and so could not echo its id: the oldest one due.
            rid = next(iter(self.handlers))
        handler = self.handlers.pop(rid, None)
        if handler is None:
            return  # the late reply of a call that timed out earlier
        c._note_instance(resp)
        self._note(handler(resp))

    def _note(self, failure: Optional[KvdError]) -> None:
        if failure is not None:
            self.unreported.append(failure)
