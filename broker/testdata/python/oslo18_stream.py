"""oslo.messaging 18.1 against a broker, with kolla-ansible 2025.1's
defaults: quorum queues, transient quorum reply queues, stream fanout,
prefetch 10 and the queue manager. An RPC server (with its fanout
listener) and a client doing call, cast and fanout cast. Prints one JSON
line; exits non-zero when something did not arrive.

usage: oslo18_stream.py CONFIG_FILE
"""
import json
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging as om


class Endpoint(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def echo(self, ctxt, x):
        return x

    def note(self, ctxt, x):
        with self.lock:
            self.events.append("cast:" + x)

    def fan(self, ctxt, x):
        with self.lock:
            self.events.append("fanout:" + x)


def main():
    conf = cfg.CONF  # the metrics options are registered on it only
    conf(["--config-file", sys.argv[1]], project="oslogo-test")
    transport = om.get_rpc_transport(conf)
    ep = Endpoint()
    target = om.Target(topic="oslogo_t", server="srv1")
    server = om.get_rpc_server(transport, target, [ep])
    server.start()
    out = {"oslo_messaging": om.__file__}
    try:
        client = om.get_rpc_client(transport, om.Target(topic="oslogo_t"), timeout=30)
        out["call"] = client.call({}, "echo", x="hi")
        out["direct_call"] = client.prepare(server="srv1").call({}, "echo", x="direct")
        client.cast({}, "note", x="c1")
        client.prepare(fanout=True).cast({}, "fan", x="f1")
        deadline = time.time() + 30
        while time.time() < deadline:
            with ep.lock:
                if "cast:c1" in ep.events and "fanout:f1" in ep.events:
                    break
            time.sleep(0.1)
        client.prepare(fanout=True).cast({}, "fan", x="f2")
        deadline = time.time() + 30
        while time.time() < deadline:
            with ep.lock:
                if "fanout:f2" in ep.events:
                    break
            time.sleep(0.1)
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
    with ep.lock:
        out["events"] = list(ep.events)
    print(json.dumps(out))
    ok = (out.get("call") == "hi" and out.get("direct_call") == "direct"
          and sorted(out["events"]) == ["cast:c1", "fanout:f1", "fanout:f2"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
