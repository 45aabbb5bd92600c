"""client.py of the kombu example (seed 002), ported to Python 3 / kombu 5."""
import sys

from kombu import Connection
from kombu.common import maybe_declare
from kombu.pools import producers

from kombu_queues import task_exchange
from kombu_tasks import hello_task

priority_to_routing_key = {"high": "hipri", "mid": "midpri", "low": "lopri"}


def send_as_task(connection, fun, args=(), kwargs={}, priority="mid"):
    payload = {"fun": fun, "args": args, "kwargs": kwargs}
    routing_key = priority_to_routing_key[priority]
    with producers[connection].acquire(block=True) as producer:
        maybe_declare(task_exchange, producer.channel)
        producer.publish(payload, serializer="pickle", compression="bzip2",
                         routing_key=routing_key)


if __name__ == "__main__":
    port = sys.argv[1]
    connection = Connection("amqp://guest:guest@127.0.0.1:%s//" % port)
    for prio, who in (("high", "Kombu-high"), ("mid", "Kombu-mid"), ("low", "Kombu-low")):
        send_as_task(connection, fun=hello_task, args=(who, ), kwargs={}, priority=prio)
    connection.release()
    print("sent", flush=True)
