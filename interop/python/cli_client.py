"""A Python oslo.messaging client for the `oslogo serve` acceptance test.

Usage: cli_client.py URL TOPIC
Calls add(a=2, b=3) and fail(message=...) on TOPIC and prints one JSON
object with both outcomes.
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
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=30)
    res = {
        "add": attempt(lambda: client.call({}, "add", a=2, b=3)),
        "fail": attempt(lambda: client.call({}, "fail", message="boom from python")),
    }
    out(res)
    transport.cleanup()


if __name__ == "__main__":
    main()
