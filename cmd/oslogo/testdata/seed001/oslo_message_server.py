# coding:utf-8
# oslo_message_server.py of seed 001 (/work/shared/seeds/001_*.txt), as the
# document gives it, with Python 3's print() and executor='threading':
# oslo.messaging 14 has no 'blocking' executor any more ("Executor should be
# None or 'eventlet' and 'threading'"). It reads the transport URL from
# my.conf in the working directory.
from oslo_config import cfg
import oslo_messaging
import time


class ServerControlEndpoint(object):
    def __init__(self, server):
        self.server = server

    def stop(self, ctx):
        if self.server:
            self.server.stop()


class AddEndpoint(object):
    def add(self, ctx, a, b):
        print('revice message')
        return a + b


opts = [
    cfg.StrOpt('url', default='0.0.0.0'),
]
CONF = cfg.CONF
CONF.register_opts(opts)
CONF(default_config_files=['my.conf'])
transport_url = CONF.url
transport = oslo_messaging.get_transport(cfg.CONF, transport_url)
target = oslo_messaging.Target(topic='test', server='server1')
endpoints = [
    ServerControlEndpoint(None),
    AddEndpoint(),
]
server = oslo_messaging.get_rpc_server(transport, target, endpoints,
                                       executor='threading')
try:
    server.start()
    print('The Server!')
    while True:
        time.sleep(1)
except KeyboardInterrupt:
    print("Stopping server")
    server.stop()
