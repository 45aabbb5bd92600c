"""A Python oslo.messaging RPC server that works slowly, to be killed.

Usage: slow_server.py URL TOPIC SERVER WORK_SECONDS WORKERS

Serves "record" (sleeps WORK_SECONDS) and "sleep" on TOPIC as SERVER with
WORKERS executor threads. Prints READY once consuming, "GOT n" when a
cast's handler starts and "DONE n" when it has finished, as the Go child
server of the faults tests does.
"""
import sys
import threading
import time

import oslo_messaging
from oslo_config import cfg

lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Endpoint(object):
    def __init__(self, work):
        self.work = work

    def record(self, ctxt, seq):
        say("GOT %d" % seq)
        time.sleep(self.work)
        say("DONE %d" % seq)

    def sleep(self, ctxt, seconds):
        time.sleep(seconds)
        return seconds


def main():
    url, topic, server = sys.argv[1], sys.argv[2], sys.argv[3]
    work, workers = float(sys.argv[4]), int(sys.argv[5])
    conf = cfg.CONF
    conf([], project="faults")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    srv = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server=server),
                                        [Endpoint(work)], executor="threading")
    srv.start(override_pool_size=workers)
    say("READY")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
