"""The `make chaos` harness in miniature: a kill -9 of shadow-sync under an operator stream."""

from __future__ import annotations

import time

import redis as redis_lib

from bench.chaos import check
from bench.chaos.load import Stream
from bench.chaos.stack import Stack
from bench.chaos.watch import Recorder


def test_kill_9_of_shadowsync_under_a_stream_loses_and_doubles_nothing(tmp_path):
    stack = Stack(tmp_path, 0, 5.0, names=("shadowsync",))
    rec = None
    try:
        stack.start()
        assert stack.broker is not None and stack.redis is not None
        rec = Recorder(stack.broker.url)
        stream = Stream("t", [f"chaos-{i:02d}" for i in range(20)], 100.0, 3.0).start(rec)
        time.sleep(1.0)
        fault = stack.kill9("shadowsync")
        stream.join()
        assert rec.wait(lambda: all(s.token in rec.rec.by_token for s in stream.sent), 30)
        client = redis_lib.Redis.from_url(stack.redis.url, decode_responses=True)
        out = check.shadows(client, rec, stream)
        assert (out.accepted, out.lost, out.doubled, out.unanswered) == (len(stream.sent), 0, 0, 0), out.notes
        assert fault.back > fault.at and not stack.unexpected
    finally:
        if rec is not None:
            rec.close()
        stack.stop()
