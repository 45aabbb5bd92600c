"""send.py of the pika hello world (seed 002), pointed at a given port."""
import sys

import pika

port = int(sys.argv[1])
connection = pika.BlockingConnection(pika.ConnectionParameters(host='127.0.0.1', port=port))
channel = connection.channel()
channel.queue_declare(queue='hello')
channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
print(" [x] Sent 'Hello World!'")
connection.close()
