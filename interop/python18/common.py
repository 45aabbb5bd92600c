"""Shared set-up of the oslo.messaging 18.1.0 peers (interop/python18).

Every runner takes a transport URL and a configuration name; the options of
the configuration are written to an oslo.config file for this run only and
loaded with it, as a service reads its nova.conf:

  defaults   no options: oslo.messaging's own defaults
  kolla      [oslo_messaging_rabbit] as kolla-ansible 2025.1 writes it:
             rabbit_quorum_queue, rabbit_transient_quorum_queue,
             rabbit_stream_fanout, rabbit_qos_prefetch_count = 10
  kolla-qm   kolla + use_queue_manager with hostname and processname, and
             [oslo_concurrency] lock_path (the queue manager's counter lock)

Use a fresh vhost per configuration: a vhost where a peer without quorum
queues declared the control exchange non-durable makes the kolla peers fall
back to non-durable queues, which RabbitMQ refuses for quorum queues (406).

The runners also work with Debian's oslo.messaging 14.0.3 (/usr/bin/python3
without PYTHONPATH): oslo.config ignores the options 14 does not know
(rabbit_transient_quorum_queue, rabbit_stream_fanout, use_queue_manager,
hostname, processname), so there `kolla` means quorum queues and the
prefetch count only.
"""
import atexit
import json
import os
import shutil
import sys
import tempfile

from oslo_config import cfg

KOLLA = {
    "oslo_messaging_rabbit": {
        "rabbit_quorum_queue": "true",
        "rabbit_transient_quorum_queue": "true",
        "rabbit_stream_fanout": "true",
        "rabbit_qos_prefetch_count": "10",
    },
}

CONFIGS = ("defaults", "kolla", "kolla-qm")


def options(config, processname):
    """The oslo.config sections and options of a configuration."""
    if config == "defaults":
        return {}
    if config == "kolla":
        return {s: dict(o) for s, o in KOLLA.items()}
    if config == "kolla-qm":
        opts = {s: dict(o) for s, o in KOLLA.items()}
        rabbit = opts["oslo_messaging_rabbit"]
        rabbit["use_queue_manager"] = "true"
        rabbit["hostname"] = os.environ.get("OSLO18_HOSTNAME", "oslogo-peer")
        rabbit["processname"] = processname
        lock = os.path.join(tempfile.gettempdir(), "oslogo-oslo18-locks")
        os.makedirs(lock, exist_ok=True)
        opts["oslo_concurrency"] = {"lock_path": lock}
        return opts
    raise SystemExit("unknown configuration %r, want one of %s" % (config, ", ".join(CONFIGS)))


def load(config, processname, project="oslogo-interop18"):
    """Write the configuration's file, load it into cfg.CONF and return it."""
    d = tempfile.mkdtemp(prefix="oslo18-")
    atexit.register(shutil.rmtree, d, True)
    path = os.path.join(d, "peer.conf")
    with open(path, "w") as f:
        for section, opts in options(config, processname).items():
            f.write("[%s]\n" % section)
            for k, v in opts.items():
                f.write("%s = %s\n" % (k, v))
            f.write("\n")
    conf = cfg.CONF
    conf(["--config-file", path], project=project, default_config_files=[])
    return conf


def out(obj):
    """Write one JSON line to stdout for the Go side to read."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def exc_info(e):
    """Describe an exception as the Go tests check it."""
    return {
        "type": type(e).__name__,
        "module": type(e).__module__,
        "str": str(e).split("\n")[0],
        "exc_type": getattr(e, "exc_type", None),
        "value": getattr(e, "value", None),
    }


def version():
    import oslo_messaging
    return {"file": oslo_messaging.__file__}
