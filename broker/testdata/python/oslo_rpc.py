"""Python oslo.messaging against a broker: RPC call, cast and fanout through
an RPC server, and notifications through a listener. Prints one line per
check and exits non-zero on failure."""
import sys
import threading
import time

from oslo_config import cfg
import oslo_messaging as messaging

url = sys.argv[1]
conf = cfg.CONF
conf([], project='oslogo-interop')
transport = messaging.get_rpc_transport(conf, url=url)
ntransport = messaging.get_notification_transport(conf, url=url)

casts = []
fanouts = []
done = threading.Event()


class Endpoint(object):
    def echo(self, ctxt, value):
        return {"echo": value}

    def fail(self, ctxt):
        raise ValueError("boom")

    def record(self, ctxt, value):
        casts.append(value)

    def fan(self, ctxt, value):
        fanouts.append(value)


target = messaging.Target(topic='oslogo_interop', server='server1')
server = messaging.get_rpc_server(transport, target, [Endpoint()], executor='threading')
server.start()

notes = []


class NotifyEndpoint(object):
    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        notes.append((event_type, payload))
        return messaging.NotificationResult.HANDLED


listener = messaging.get_notification_listener(
    ntransport, [messaging.Target(topic='oslogo_notifications')], [NotifyEndpoint()], executor='threading')
listener.start()

client = messaging.get_rpc_client(transport, messaging.Target(topic='oslogo_interop'), timeout=20)


def wait_for(cond, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    print("FAIL timeout waiting for %s" % what, flush=True)
    sys.exit(1)


try:
    r = client.call({}, 'echo', value='hello')
    assert r == {"echo": "hello"}, r
    print("call ok", flush=True)
    try:
        client.call({}, 'fail')
        print("FAIL remote error not raised", flush=True)
        sys.exit(1)
    except ValueError as e:
        print("remote error ok: %s" % e, flush=True)
    client.prepare(server='server1').cast({}, 'record', value=42)
    wait_for(lambda: casts == [42], "cast")
    print("cast ok", flush=True)
    client.prepare(fanout=True).cast({}, 'fan', value='all')
    wait_for(lambda: fanouts == ['all'], "fanout")
    print("fanout ok", flush=True)
    notifier = messaging.Notifier(ntransport, driver='messaging', publisher_id='interop',
                                  topics=['oslogo_notifications'])
    notifier.info({}, 'oslogo.test', {'n': 1})
    wait_for(lambda: notes == [('oslogo.test', {'n': 1})], "notification")
    print("notify ok", flush=True)
finally:
    server.stop()
    server.wait()
    listener.stop()
    listener.wait()
    transport.cleanup()
    ntransport.cleanup()
print("ALL OK", flush=True)
