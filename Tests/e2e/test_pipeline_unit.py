"""kvd.inflight without a daemon: pipelined replies that come back out of order (and a stale one)
reach their own handlers, a failure among them is raised by the next ordinary call, once, and
that call then gets its own reply; a reply that never comes is reported to every handler."""

import threading

import pytest
import zmq

from kvd import Client, ErrorCode, KvdError
from kvd.inflight import Inflight
from kvd.v1 import append_pb2, common_pb2, envelope_pb2


def _fake(endpoint, ready, held=3):
    """A ROUTER that holds the first `held` requests, answers them in reverse order after a stale
    reply, then answers every later request (Stats) at once; stops on a Release."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(endpoint)
    ready.set()
    pending = []
    try:
        while s.poll(3000):
            ident, payload = s.recv_multipart()
            req = envelope_pb2.Request()
            req.ParseFromString(payload)
            if req.WhichOneof("body") == "release":
                break
            r = envelope_pb2.Response()
            r.header.request_id = req.request_id
            if req.WhichOneof("body") == "stats":
                r.stats.total_pages = 42
                s.send_multipart([ident, r.SerializeToString()])
                continue
            if len(pending) == 1:  # the second request is refused
                r.error.code = common_pb2.ERROR_CODE_NOT_FOUND
                r.error.message = "kvd: no open reservation 9"
            else:
                r.commit.length = req.commit.num_tokens
            pending.append((ident, r))
            if len(pending) == held:
                stale = envelope_pb2.Response()
                stale.header.request_id = 10_000
                stale.error.code = common_pb2.ERROR_CODE_INTERNAL
                s.send_multipart([ident, stale.SerializeToString()])
                for i, resp in reversed(pending):
                    s.send_multipart([i, resp.SerializeToString()])
    finally:
        s.close(linger=0)


def _send(c, inflight, n, got):
    req = c._new_request()
    req.commit.CopyFrom(append_pb2.CommitRequest(sequence_id=1, reservation_id=9, num_tokens=n,
                                                 keep_reserved=True))

    def on_reply(resp):
        if isinstance(resp, KvdError):
            got.append((req.request_id, "lost", resp.code))
            return resp
        which = resp.WhichOneof("body")
        got.append((req.request_id, which, resp.header.request_id))
        if which == "error":
            return KvdError(resp.error.code, resp.error.message, resp.header.request_id)
        return None

    inflight.send_locked(req, on_reply)
    return req.request_id


def test_out_of_order_replies_reach_their_handlers_and_a_failure_is_raised_once(tmp_path):
    endpoint = f"ipc://{tmp_path}/fake.sock"
    ready = threading.Event()
    t = threading.Thread(target=_fake, args=(endpoint, ready), daemon=True)
    t.start()
    ready.wait(5)
    got = []
    with Client(endpoint, timeout_ms=2000, keepalive=False) as c:
        inflight = Inflight.of(c)
        with c._io:
            rids = [_send(c, inflight, n, got) for n in (1, 2, 3)]
        assert inflight.pending
        with pytest.raises(KvdError) as e:
            c.stats()  # collects the three replies first; the refused one is raised here
        assert e.value.code == ErrorCode.NOT_FOUND and e.value.request_id == rids[1]
        assert sorted(got) == sorted([(rids[0], "commit", rids[0]), (rids[1], "error", rids[1]),
                                      (rids[2], "commit", rids[2])])
        assert [g[0] for g in got] == rids[::-1], "answered in reverse order, each to its own handler"
        assert not inflight.pending
        assert c.stats().total_pages == 42  # reported once; the client goes on
        with pytest.raises(KvdError):
            c.release(1)  # stops the fake
    t.join(5)


def test_a_pipelined_reply_that_never_comes_is_reported_to_every_handler(tmp_path):
    endpoint = f"ipc://{tmp_path}/silent.sock"
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(endpoint)
    got = []
    try:
        with Client(endpoint, timeout_ms=200, keepalive=False) as c:
            inflight = Inflight.of(c)
            with c._io:
                rids = [_send(c, inflight, n, got) for n in (1, 2)]
                with pytest.raises(KvdError) as e:
                    inflight.collect_locked()
            assert e.value.code == ErrorCode.UNAVAILABLE and "pipelined" in e.value.message
            assert got == [(rids[0], "lost", ErrorCode.UNAVAILABLE), (rids[1], "lost", ErrorCode.UNAVAILABLE)]
            assert not inflight.pending
    finally:
        silent.close(linger=0)
