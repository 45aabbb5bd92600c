"""Python oslo.messaging's own RPC benchmark, the reference for `make bench-rpc`.

Usage:
  bench.py server URL TOPIC            serve echo/count until stdin closes (prints READY)
  bench.py call|cast URL TOPIC CONC COUNT SIZE
The client prints one JSON line in the schema of `oslogo bench`.
"""
import json
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg


class Endpoint(object):
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def echo(self, ctxt, **kwargs):
        return kwargs

    def record(self, ctxt, **kwargs):
        with self.lock:
            self.n += 1

    def count(self, ctxt):
        return self.n


def server(url, topic):
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=url)
    srv = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="bench"),
                                        [Endpoint()], executor="threading")
    srv.start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()
    srv.stop()
    srv.wait()
    transport.cleanup()


def client(mode, url, topic, conc, count, size):
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=url)
    cli = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=60)
    payload = "x" * size
    ctxt = {}
    lock = threading.Lock()
    lat = []
    todo = [0]

    def op():
        if mode == "call":
            cli.call(ctxt, "echo", s=payload)
        else:
            cli.cast(ctxt, "record", s=payload)

    def worker(n):
        mine = []
        while True:
            with lock:
                if todo[0] >= n:
                    break
                todo[0] += 1
            t0 = time.perf_counter()
            op()
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    def run(n):
        todo[0] = 0
        threads = [threading.Thread(target=worker, args=(n,)) for _ in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def wait_casts(n):
        while cli.call(ctxt, "count") < n:
            time.sleep(0.01)

    # The server's cast counter lives as long as the server: start from
    # what earlier runs left in it.
    base = cli.call(ctxt, "count") if mode == "cast" else 0
    warm = max(count // 10, 1)
    run(warm)
    if mode == "cast":
        wait_casts(base + warm)
    lat.clear()
    start = time.perf_counter()
    run(count)
    if mode == "cast":
        wait_casts(base + warm + count)
    elapsed = time.perf_counter() - start
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(json.dumps({"impl": "python-oslo.messaging", "mode": mode, "concurrency": conc, "size": size,
                      "count": count, "seconds": elapsed, "rate": count / elapsed,
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99)}), flush=True)
    transport.cleanup()


if __name__ == "__main__":
    cfg.CONF([], project="oslogo-bench")
    if sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3])
    else:
        client(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
