"""A Python oslo.messaging notifier for the interop tests.

Usage: notifier.py URL TOPIC DRIVER TAG
Sends one notification per priority (audit, debug, info, warn, error,
critical, sample) with event type "interop.<priority>" and payload
{"tag": TAG, "u": "h\u00e9llo"}; prints {"sent": n}.
"""
import sys

import oslo_messaging
from oslo_config import cfg

from common import out


def main():
    url, topic, drv, tag = sys.argv[1:5]
    conf = cfg.CONF
    conf([], project="oslogo-interop")
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    notifier = oslo_messaging.Notifier(transport, publisher_id="py.host1", driver=drv, topics=[topic])
    ctxt = {"user_id": "u1", "request_id": "req-1", "roles": ["r"], "auth_token": "secret"}
    n = 0
    for prio in ("audit", "debug", "info", "warn", "error", "critical", "sample"):
        getattr(notifier, prio)(ctxt, "interop." + prio, {"tag": tag, "u": "h\u00e9llo", "n": [1, {"x": None}]})
        n += 1
    out({"sent": n})
    transport.cleanup()


if __name__ == "__main__":
    main()
