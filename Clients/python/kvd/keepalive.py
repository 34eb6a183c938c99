"""Leases: the KeepAlive result and the thread that renews a client's lease while it idles.

The daemon gives what a connection owns (its sequences, its open reservations) a lease of
``Limits.lease_ms``: any request from the connection renews it. A sequence whose owner stays quiet
longer becomes an orphan (first in line for compaction and eviction) and is released after
``orphan_grace_ms``. :class:`KeepAliveThread` sends a KeepAlive whenever its client has sent nothing
for a third of the lease, so a program that is alive but idle (waiting for a user, say) keeps its
sequences, and one that died or closed its client stops renewing.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any, List, NamedTuple, Optional

# How long close() waits for the thread; it notices the stop request within CANCEL_POLL_MS.
_JOIN_TIMEOUT_S = 5.0
# While the thread waits for a KeepAlive reply it looks at the stop request this often, so close()
# never waits for a full request timeout when the daemon does not answer.
CANCEL_POLL_MS = 50


class KeepAliveResult(NamedTuple):
    """What a KeepAlive did."""

    lease_ms: int        # the lease this renewal bought (0 = the daemon runs without leases)
    adopted: int         # sequences of the request that are now this connection's
    missing: List[int]   # requested sequences that do not exist (never created, released, evicted)


class KeepAliveThread:
    """A daemon thread calling ``client._keepalive_tick()`` whenever it asks to be called again.

    It holds only a weak reference to the client: a client nobody uses any more is collected (its
    ``__del__`` closes it) instead of being kept alive — and renewing — by this thread. Being a
    daemon thread, it never keeps the interpreter running either.
    """

    def __init__(self, client: Any) -> None:
        self._client = weakref.ref(client)
        self.stopping = threading.Event()
        # The last exception a KeepAlive raised (None after a success), for diagnostics only: a
        # failed renewal is not fatal, the next one (or the next call) tries again.
        self.last_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="kvd-keepalive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait_s = 0.0
        while not self.stopping.wait(wait_s):
            client = self._client()
            if client is None:
                return
            try:
                wait_s = client._keepalive_tick(self)
            except Exception as e:  # noqa: BLE001 - a failed renewal must not kill the thread
                self.last_error = e
                wait_s = client._keepalive_interval_s() or 1.0
            # Drop the reference before sleeping, or the client could never be collected.
            del client

    def stop(self) -> None:
        """Ask the thread to stop and wait for it (not from the thread itself, nor while the
        interpreter shuts down: daemon threads are frozen then and would never finish)."""
        self.stopping.set()
        if threading.current_thread() is not self._thread and not sys.is_finalizing():
            self._thread.join(_JOIN_TIMEOUT_S)

    def is_alive(self) -> bool:
        return self._thread.is_alive()
