"""An oslo.messaging RPC client (18.1.0 peer, any configuration).

Usage: client.py URL CONFIG TOPIC OPS
OPS is a JSON list of operations, each
  {"op": "call" | "cast", "method": M, "args": {...},
   "server": S (optional), "fanout": true (optional), "timeout": secs (optional)}
Prints one JSON line: {"results": [{"ok": true, "value": ...} |
{"ok": false, "error": {...}}, ...], "oslo_messaging": file}.
"""
import json
import sys

import oslo_messaging

import common


def main():
    url, config, topic, ops = sys.argv[1:5]
    conf = common.load(config, "client")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=30)
    ctxt = {"user_id": "u1", "request_id": "req-1"}
    results = []
    for op in json.loads(ops):
        kw = {}
        if op.get("server"):
            kw["server"] = op["server"]
        if op.get("fanout"):
            kw["fanout"] = True
        if op.get("timeout"):
            kw["timeout"] = op["timeout"]
        c = client.prepare(**kw) if kw else client
        try:
            if op["op"] == "call":
                results.append({"ok": True, "value": c.call(ctxt, op["method"], **op.get("args", {}))})
            else:
                c.cast(ctxt, op["method"], **op.get("args", {}))
                results.append({"ok": True, "value": None})
        except Exception as e:  # noqa: every outcome is reported
            results.append({"ok": False, "error": common.exc_info(e)})
    common.out({"results": results, "oslo_messaging": common.version()["file"]})
    transport.cleanup()


if __name__ == "__main__":
    main()
