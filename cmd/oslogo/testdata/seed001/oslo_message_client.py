# coding:utf-8
# oslo_message_client.py of seed 001, as the document gives it, with
# Python 3's print().
from oslo_config import cfg
import oslo_messaging

opts = [
    cfg.StrOpt('url', default='helloworld'),
]
CONF = cfg.CONF
CONF.register_opts(opts)
CONF(default_config_files=['my.conf'])
transport_url = CONF.url
transport = oslo_messaging.get_transport(cfg.CONF, transport_url)
target = oslo_messaging.Target(topic='test')
client = oslo_messaging.RPCClient(transport, target)
r = client.call({}, 'add', a=2, b=3)
print('result :', r)
cctxt = client.prepare(version='1.0')
r_two = cctxt.call({}, 'add', a=2, b=3)
print('result_two :', r_two)
