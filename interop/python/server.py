"""A Python oslo.messaging RPC server for the interop tests.

Usage: server.py URL TOPIC SERVER
Prints READY once its queues exist, one JSON line per cast it receives,
and serves until stdin closes.
"""
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg

from common import out


class MyError(Exception):
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        super().__init__("my error %s" % kwargs)


class Default(object):
    target = oslo_messaging.Target(version="1.3")

    def __init__(self, server):
        self.server = server

    def add(self, ctxt, a, b):
        return a + b

    def echo(self, ctxt, **kwargs):
        return kwargs

    def ctx(self, ctxt):
        return ctxt

    def whoami(self, ctxt):
        return self.server

    def fail(self, ctxt, msg="bad value"):
        raise ValueError(msg, 42)

    def myfail(self, ctxt):
        raise MyError(code=7, reason="nope")

    def slow(self, ctxt, seconds):
        time.sleep(seconds)
        return seconds

    def record(self, ctxt, **kwargs):
        out({"cast": kwargs, "server": self.server, "ctxt": ctxt})

    def _private(self, ctxt):
        return "never"


class Namespaced(object):
    target = oslo_messaging.Target(namespace="ns1", version="2.3")

    def nsmethod(self, ctxt):
        return "ns1-ok"


def main():
    url, topic, server = sys.argv[1:4]
    conf = cfg.CONF
    conf([], project="oslogo-interop")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    target = oslo_messaging.Target(topic=topic, server=server)
    srv = oslo_messaging.get_rpc_server(
        transport, target, [Default(server), Namespaced()], executor="threading"
    )
    srv.start()
    out({"ready": server})
    sys.stdin.read()  # serve until the test closes our stdin
    srv.stop()
    srv.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
