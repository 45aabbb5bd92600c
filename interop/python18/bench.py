"""oslo.messaging's RPC throughput in one configuration, for `make bench-peers`.

Usage: bench.py IMPL URL CONFIG call|cast|fanout COUNT
Runs an RPC server (threading executor, endpoint echo) and a client in
this process, each on a transport of its own; one caller sends COUNT
messages one after the other (after a warm-up of COUNT/10, at least 2).
A call counts when its reply is back, a cast or fanout cast once the
server has run it. Prints one JSON line in the schema of `oslogo bench`,
with "impl": IMPL and "config": CONFIG.

Runs with either peer: the 18.1.0 copy (PYTHONPATH from .peers/oslo18.env)
or Debian's 14.0.3 (/usr/bin/python3 alone); see common.py for what the
configurations mean to 14.0.3.
"""
import json
import sys
import threading
import time
import uuid

import oslo_messaging

import common


class Endpoint(object):
    def __init__(self):
        self.n = 0
        self.want = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def expect(self, n):
        with self.lock:
            self.n = 0
            self.want = n
            self.done.clear()

    def echo(self, ctxt, **kwargs):
        with self.lock:
            self.n += 1
            if self.n == self.want:
                self.done.set()
        return kwargs


def main():
    impl, url, config, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    conf = common.load(config, "bench-" + mode, project="oslogo-bench")
    topic = "pybench_" + uuid.uuid4().hex[:8]
    srv_t = oslo_messaging.get_rpc_transport(conf, url=url)
    cli_t = oslo_messaging.get_rpc_transport(conf, url=url)
    ep = Endpoint()
    srv = oslo_messaging.get_rpc_server(srv_t, oslo_messaging.Target(topic=topic, server="bench"), [ep],
                                        executor="threading")
    srv.start()
    cli = oslo_messaging.get_rpc_client(cli_t, oslo_messaging.Target(topic=topic), timeout=60)
    if mode == "fanout":
        cli = cli.prepare(fanout=True)
    payload = {"s": "x" * 64}

    def run(n):
        lat = []
        ep.expect(n if mode != "call" else 0)
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            if mode == "call":
                cli.call({}, "echo", **payload)
            else:
                cli.cast({}, "echo", **payload)
            lat.append(time.perf_counter() - t0)
        if mode != "call" and not ep.done.wait(120):
            raise SystemExit("only %d of %d %ss arrived" % (ep.n, n, mode))
        return time.perf_counter() - start, lat

    run(max(count // 10, 2))
    elapsed, lat = run(count)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(json.dumps({"impl": impl, "config": config, "mode": mode, "concurrency": 1, "size": 64,
                      "count": count, "seconds": elapsed, "rate": count / elapsed,
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99)}), flush=True)
    srv.stop()
    srv.wait()
    cli_t.cleanup()
    srv_t.cleanup()


if __name__ == "__main__":
    main()
