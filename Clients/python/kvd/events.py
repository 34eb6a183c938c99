"""A subscriber to the memory manager's events (``HelloResponse.events_endpoint``, a ZeroMQ PUB).

Every event is two frames: the topic ``kvd.<tenant>`` and a serialized ``kvd.v1.Event``.

    with client.events() as ev:       # this client's tenant, on the endpoint Hello names
        ev.ready()                    # wait until the subscription reaches the daemon
        for e in ev:                  # kvd.v1.Event: kind, sequence_id, pages_freed, reason...
            print(e.kind, e.sequence_id, e.reason)

PUB/SUB drops what nobody has subscribed to yet: events published before the subscription reached
the daemon are never delivered. Call :meth:`Events.ready` (or wait a moment) after opening before
relying on an event, and compare ``sequence_number`` to notice gaps (a slow subscriber loses
events too).
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional, Union

import zmq
from google.protobuf.message import DecodeError

from kvd import curve
from kvd.errors import ErrorCode, KvdError
from kvd.v1 import memory_pb2


class Events:
    """Subscribes to ``endpoint`` for the topics starting with ``topic_prefix``.

    ZeroMQ filters by prefix, so ``"kvd.a"`` also receives tenant ``"ab"``'s events; with
    ``exact_topic=True`` only events whose topic equals ``topic_prefix`` are returned. When the
    daemon secures its tcp endpoints with CURVE, give the same three keys as to :class:`Client`.
    """

    def __init__(self, endpoint: str, topic_prefix: Union[str, bytes] = "kvd.", *,
                 exact_topic: bool = False, context: Optional[zmq.Context] = None,
                 curve_server_key: Union[str, bytes, None] = None,
                 curve_public_key: Union[str, bytes, None] = None,
                 curve_secret_key: Union[str, bytes, None] = None):
        self.endpoint = endpoint
        self.topic = topic_prefix.encode() if isinstance(topic_prefix, str) else bytes(topic_prefix)
        self.exact_topic = exact_topic
        keys = curve.client_keys(curve_server_key, curve_public_key, curve_secret_key)
        ctx = context or zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        if keys is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
        sock.setsockopt(zmq.SUBSCRIBE, self.topic)
        # The monitor must exist before connect() or the handshake event could be missed.
        self._monitor: Optional[zmq.Socket] = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._ready = False
        sock.connect(endpoint)
        self._sock: Optional[zmq.Socket] = sock

    def ready(self, timeout_ms: int = 5000) -> bool:
        """Wait until the connection to the daemon is established (its ZeroMQ handshake done);
        False if that takes longer than ``timeout_ms``.

        The subscription is sent right behind the handshake, so from then on (give it a few
        milliseconds) published events are delivered. A daemon that is not running, or that
        refuses this subscriber's CURVE key, never completes the handshake.
        """
        if self._ready:
            return True
        sock = self._require_open()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            monitor = self._monitor
            assert monitor is not None  # made with the socket, closed with it
            if remaining <= 0 or not monitor.poll(remaining, zmq.POLLIN):
                return False
            frames = monitor.recv_multipart()
            event = int.from_bytes(frames[0][:2], "little")  # ZeroMQ's monitor frame: u16 event
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._ready = True
                self._stop_monitor(sock)
                return True

    def recv(self, timeout_ms: Optional[int] = None) -> Optional[memory_pb2.Event]:
        """The next event, or None when none comes within ``timeout_ms`` (None: wait forever)."""
        sock = self._require_open()
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while True:
            if deadline is None:
                wait = None
            else:
                wait = max(0, int((deadline - time.monotonic()) * 1000))
            if not sock.poll(wait, zmq.POLLIN):
                return None
            frames = sock.recv_multipart()
            if len(frames) != 2:
                raise KvdError(ErrorCode.INTERNAL, f"kvd: an event of {len(frames)} frames from "
                                                   f"{self.endpoint}; expected topic + event")
            if self.exact_topic and frames[0] != self.topic:
                continue  # another tenant whose name starts with ours
            event = memory_pb2.Event()
            try:
                event.ParseFromString(frames[1])
            except DecodeError:
                raise KvdError(ErrorCode.INTERNAL, f"kvd: undecodable event ({len(frames[1])} "
                                                   f"bytes) from {self.endpoint}") from None
            return event

    def __iter__(self) -> Iterator[memory_pb2.Event]:
        """Every event as it comes (blocks between them) until :meth:`close`."""
        while self._sock is not None:
            event = self.recv()
            if event is not None:
                yield event

    def close(self) -> None:
        """Close the subscription. Idempotent."""
        if self._sock is not None:
            self._stop_monitor(self._sock)
            self._sock.close(linger=0)
            self._sock = None

    def _stop_monitor(self, sock: zmq.Socket) -> None:
        if self._monitor is not None:
            sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def _require_open(self) -> zmq.Socket:
        if self._sock is None:
            raise KvdError(ErrorCode.FAILED_PRECONDITION, "kvd: the event subscriber is closed")
        return self._sock

    def __enter__(self) -> "Events":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
