"""A Python oslo.messaging notification listener for the interop tests.

Usage: listener.py URL TOPIC POOL
POOL "-" means no pool. Prints READY, then one JSON line per notification
(priority, publisher_id, event_type, payload, metadata, ctxt), until stdin
closes.
"""
import sys

import oslo_messaging
from oslo_config import cfg

from common import out


class Endpoint(object):
    pass


def make(prio):
    def handler(self, ctxt, publisher_id, event_type, payload, metadata):
        out({"priority": prio, "publisher_id": publisher_id, "event_type": event_type,
             "payload": payload, "metadata": metadata, "ctxt": ctxt})
        return oslo_messaging.NotificationResult.HANDLED
    return handler


for _p in ("audit", "debug", "info", "warn", "error", "critical", "sample"):
    setattr(Endpoint, _p, make(_p))


def main():
    url, topic, pool = sys.argv[1:4]
    conf = cfg.CONF
    conf([], project="oslogo-interop")
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [Endpoint()],
        executor="threading", pool=None if pool == "-" else pool)
    listener.start()
    out({"ready": True})
    sys.stdin.read()
    listener.stop()
    listener.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
