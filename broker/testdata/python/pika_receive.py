"""receive.py of the pika hello world (seed 002); stops after one message."""
import sys

import pika

port = int(sys.argv[1])
connection = pika.BlockingConnection(pika.ConnectionParameters(host='127.0.0.1', port=port))
channel = connection.channel()
channel.queue_declare(queue='hello')
print(' [*] Waiting for messages.', flush=True)


def callback(ch, method, properties, body):
    print(" [x] Received %r" % (body,), flush=True)
    ch.stop_consuming()


channel.basic_consume(queue='hello', on_message_callback=callback, auto_ack=True)
channel.start_consuming()
connection.close()
