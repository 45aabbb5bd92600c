"""worker.py of the kombu example (seed 002), ported to Python 3 / kombu 5;
it exits after the number of tasks given on the command line."""
import sys

from kombu import Connection
from kombu.mixins import ConsumerMixin
from kombu.utils.functional import reprcall

from kombu_queues import task_queues


class Worker(ConsumerMixin):
    def __init__(self, connection, want):
        self.connection = connection
        self.want = want
        self.seen = 0

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=task_queues, accept=['pickle', 'json'],
                         callbacks=[self.process_task])]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        print("worker ready", flush=True)

    def process_task(self, body, message):
        fun = body["fun"]
        args = body["args"]
        kwargs = body["kwargs"]
        print("Got task: %s" % reprcall(fun.__name__, args, kwargs), flush=True)
        try:
            fun(*args, **kwargs)
        except Exception as exc:
            print("task raised exception: %r" % exc, flush=True)
        message.ack()
        self.seen += 1
        if self.seen >= self.want:
            self.should_stop = True


if __name__ == "__main__":
    port, want = sys.argv[1], int(sys.argv[2])
    with Connection("amqp://guest:guest@127.0.0.1:%s//" % port) as conn:
        Worker(conn, want).run()
    print("bye bye", flush=True)
