"""A Python oslo.messaging RPC client for the interop tests.

Usage: client.py URL TOPIC
Runs every scenario against the (Go) servers on TOPIC and prints one JSON
object with the outcome of each; the Go test asserts on them.
"""
import sys

import oslo_messaging
from oslo_config import cfg

from common import out, exc_info


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as e:  # noqa: every outcome is reported
        return {"ok": False, "error": exc_info(e)}


def main():
    url, topic = sys.argv[1:3]
    conf = cfg.CONF
    conf([], project="oslogo-interop")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    target = oslo_messaging.Target(topic=topic)
    client = oslo_messaging.get_rpc_client(transport, target, timeout=20)
    ctxt = {"user_id": "u1", "request_id": "req-1", "roles": ["admin"], "is_admin": True}
    big = "x" * (1024 * 1024)
    nested = {"a": [1, 2.5, None, True, {"b": {"c": ["d"]}}], "u": "h\u00e9llo \u2603 \U0001F600"}
    res = {}
    res["add"] = attempt(lambda: client.call(ctxt, "add", a=2, b=3))
    res["echo_nested"] = attempt(lambda: client.call(ctxt, "echo", n=nested))
    res["echo_big_len"] = attempt(lambda: len(client.call(ctxt, "echo", s=big)["s"]))
    res["ctx"] = attempt(lambda: client.call(ctxt, "ctx"))
    res["fail"] = attempt(lambda: client.call(ctxt, "fail", msg="bad value"))
    res["nosuch"] = attempt(lambda: client.call(ctxt, "nosuch"))
    res["private"] = attempt(lambda: client.call(ctxt, "_private"))
    res["v30"] = attempt(lambda: client.prepare(version="3.0").call(ctxt, "add", a=1, b=1))
    res["v12"] = attempt(lambda: client.prepare(version="1.2").call(ctxt, "add", a=1, b=1))
    res["ns21"] = attempt(lambda: client.prepare(namespace="ns1", version="2.1").call(ctxt, "nsmethod"))
    res["ns24"] = attempt(lambda: client.prepare(namespace="ns1", version="2.4").call(ctxt, "nsmethod"))
    res["named"] = attempt(lambda: client.prepare(server="s2").call(ctxt, "whoami"))
    res["roundrobin"] = attempt(lambda: sorted(set(client.call(ctxt, "whoami") for _ in range(30))))
    res["timeout"] = attempt(lambda: client.prepare(timeout=1).call(ctxt, "slow", seconds=3))
    res["monitor"] = attempt(lambda: client.prepare(timeout=20, call_monitor_timeout=2).call(ctxt, "slow", seconds=4))
    res["cast"] = attempt(lambda: client.cast(ctxt, "record", tag="cast-1"))
    res["fanout"] = attempt(lambda: client.prepare(fanout=True).cast(ctxt, "record", tag="fanout-1"))
    res["mandatory"] = attempt(lambda: oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic + "_nobody"), timeout=5,
        transport_options=oslo_messaging.TransportOptions(at_least_once=True)).call(ctxt, "add", a=1, b=1))
    out(res)
    transport.cleanup()


if __name__ == "__main__":
    main()
