"""An oslo.messaging RPC server (18.1.0 peer, any configuration).

Usage: server.py URL CONFIG TOPIC SERVER
Endpoints: echo(**kw) -> kw, add(a, b) -> a + b, fail(msg) raises
ValueError(msg), whoami() -> SERVER, record(**kw) for casts and fanout casts
(prints {"cast": kw, "server": SERVER}). Prints {"ready": SERVER,
"oslo_messaging": file} once its queues exist, serves until stdin closes.
"""
import sys

import oslo_messaging

import common


class Endpoint(object):
    def __init__(self, server):
        self.server = server

    def echo(self, ctxt, **kwargs):
        return kwargs

    def add(self, ctxt, a, b):
        return a + b

    def fail(self, ctxt, msg="bad value"):
        raise ValueError(msg)

    def whoami(self, ctxt):
        return self.server

    def record(self, ctxt, **kwargs):
        common.out({"cast": kwargs, "server": self.server})


def main():
    url, config, topic, server = sys.argv[1:5]
    conf = common.load(config, "server-" + server)
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    srv = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=server),
        [Endpoint(server)], executor="threading")
    srv.start()
    common.out({"ready": server, "oslo_messaging": common.version()["file"]})
    sys.stdin.read()
    srv.stop()
    srv.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
