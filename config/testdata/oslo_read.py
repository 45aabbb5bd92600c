"""Reads config files with Python oslo.config and prints the values as JSON.

Used by interop_test.go to check that the Go parser agrees with oslo.config.
Options mirror interopOpts in interop_test.go.
"""
import json
import sys

from oslo_config import cfg

conf = cfg.ConfigOpts()
conf.register_opts([cfg.StrOpt('url'), cfg.StrOpt('Key'),
                    cfg.MultiStrOpt('m', default=[]),
                    cfg.StrOpt('new', deprecated_opts=[
                        cfg.DeprecatedOpt('old'),
                        cfg.DeprecatedOpt('older', group='legacy')])])
conf.register_opts([cfg.StrOpt('k')], group='MyGroup')
conf.register_opts([cfg.BoolOpt('ssl', default=False, deprecated_name='rabbit_use_ssl')],
                   group='oslo_messaging_rabbit')
try:
    conf(args=[], default_config_files=sys.argv[1:])
    out = {
        'url': conf.url, 'Key': conf.Key, 'm': conf.m, 'new': conf.new,
        'MyGroup.k': conf.MyGroup.k,
        'ssl': conf.oslo_messaging_rabbit.ssl,
    }
except Exception as e:  # any parse error
    out = {'error': str(e)}
json.dump(out, sys.stdout)
