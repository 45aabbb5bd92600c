"""Python oslo.messaging under the failover scenario's load, for comparison.

Usage: failover.py URL TOPIC QUORUM(0|1) SECONDS CALL_RATE CAST_RATE CALL_TIMEOUT

Runs one RPC server (its own transport) and one client (another transport)
on TOPIC, calls "echo" at CALL_RATE and casts "record" at CAST_RATE for
SECONDS, each request in its own thread, then waits for the casts to drain.
Prints, one per line, with Unix times:
  READY
  CALL <start> <end> ok|<exception class>
  CAST <seq> ok|<exception class>
  RECV <seq>
  END
The Go test kills and restarts cluster nodes meanwhile and reads the lines.
"""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import oslo_messaging
from oslo_config import cfg
from oslo_messaging._drivers import impl_rabbit

lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Endpoint(object):
    def echo(self, ctxt, n):
        return n

    def record(self, ctxt, seq):
        say("RECV %d" % seq)


def configure(quorum):
    conf = cfg.CONF
    conf([], project="faults")
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_quorum_queue", quorum, group="oslo_messaging_rabbit")
    return conf


def main():
    url, topic = sys.argv[1], sys.argv[2]
    quorum = sys.argv[3] == "1"
    seconds, call_rate, cast_rate = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    call_timeout = float(sys.argv[7])

    conf = configure(quorum)
    srv_tr = oslo_messaging.get_rpc_transport(conf, url=url)
    # The topic is the exchange too: each run declares its own.
    server = oslo_messaging.get_rpc_server(srv_tr, oslo_messaging.Target(exchange=topic, topic=topic, server="py1"),
                                           [Endpoint()], executor="threading")
    server.start()
    cli_tr = oslo_messaging.get_rpc_transport(conf, url=url)
    client = oslo_messaging.RPCClient(cli_tr, oslo_messaging.Target(exchange=topic, topic=topic), timeout=call_timeout)
    # Wait until the server answers.
    deadline = time.time() + 60
    while True:
        try:
            client.call({}, "echo", n=0)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    say("READY")

    pool = ThreadPoolExecutor(max_workers=512)

    def one_call():
        start = time.time()
        try:
            client.call({}, "echo", n=1)
            res = "ok"
        except Exception as e:  # every failure is counted, by class
            res = type(e).__name__
        say("CALL %.6f %.6f %s" % (start, time.time(), res))

    def one_cast(seq):
        try:
            client.cast({}, "record", seq=seq)
            res = "ok"
        except Exception as e:
            res = type(e).__name__
        say("CAST %d %s" % (seq, res))

    begin = time.time()
    next_call, next_cast, seq = begin, begin, 0
    while time.time() - begin < seconds:
        now = time.time()
        if now >= next_call:
            pool.submit(one_call)
            next_call += 1.0 / call_rate
        if now >= next_cast:
            seq += 1
            pool.submit(one_cast, seq)
            next_cast += 1.0 / cast_rate
        time.sleep(max(0.0, min(next_call, next_cast) - time.time()))
    pool.shutdown(wait=True)
    time.sleep(15)  # let the server drain the casts
    say("END")
    server.stop()
    server.wait()
    cli_tr.cleanup()
    srv_tr.cleanup()


if __name__ == "__main__":
    main()
