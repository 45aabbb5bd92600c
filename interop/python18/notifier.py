"""An oslo.messaging notifier (18.1.0 peer, any configuration).

Usage: notifier.py URL CONFIG TOPIC TAG
Sends one notification per priority (audit, debug, info, warn, error,
critical, sample), event type "interop.<priority>", payload {"tag": TAG},
with the messagingv2 driver; prints {"sent": 7}.
"""
import sys

import oslo_messaging

import common

PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def main():
    url, config, topic, tag = sys.argv[1:5]
    conf = common.load(config, "notifier")
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    notifier = oslo_messaging.Notifier(transport, publisher_id="py18.host1", driver="messagingv2",
                                       topics=[topic])
    for prio in PRIORITIES:
        getattr(notifier, prio)({"request_id": "req-1"}, "interop." + prio, {"tag": tag})
    common.out({"sent": len(PRIORITIES), "oslo_messaging": common.version()["file"]})
    transport.cleanup()


if __name__ == "__main__":
    main()
