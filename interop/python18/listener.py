"""An oslo.messaging notification listener (18.1.0 peer, any configuration).

Usage: listener.py URL CONFIG TOPIC POOL
POOL "-" means no pool. Prints {"ready": POOL}, then one JSON line per
notification (priority, publisher_id, event_type, payload, pool), until
stdin closes.
"""
import sys

import oslo_messaging

import common


class Endpoint(object):
    def __init__(self, pool):
        self.pool = pool


def make(prio):
    def handler(self, ctxt, publisher_id, event_type, payload, metadata):
        common.out({"priority": prio, "publisher_id": publisher_id, "event_type": event_type,
                    "payload": payload, "pool": self.pool})
        return oslo_messaging.NotificationResult.HANDLED
    return handler


for _p in ("audit", "debug", "info", "warn", "error", "critical", "sample"):
    setattr(Endpoint, _p, make(_p))


def main():
    url, config, topic, pool = sys.argv[1:5]
    conf = common.load(config, "listener-" + pool)
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [Endpoint(pool)],
        executor="threading", pool=None if pool == "-" else pool)
    listener.start()
    common.out({"ready": pool, "oslo_messaging": common.version()["file"]})
    sys.stdin.read()
    listener.stop()
    listener.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
