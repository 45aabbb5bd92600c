"""Shared set-up of the interop peers: oslo.messaging transports from a URL."""
import json
import sys


def out(obj):
    """Write one JSON line to stdout for the Go test to read."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def exc_info(e):
    """Describe an exception as the Go tests check it."""
    return {
        "type": type(e).__name__,
        "module": type(e).__module__,
        "str": str(e),
        "args": [a if isinstance(a, (str, int, float, bool, type(None))) else repr(a) for a in getattr(e, "args", ())],
        "is_value_error": isinstance(e, ValueError),
        "exc_type": getattr(e, "exc_type", None),
        "value": getattr(e, "value", None),
    }
