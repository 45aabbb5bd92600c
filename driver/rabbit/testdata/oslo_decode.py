"""Decodes message bodies the way Python oslo.messaging 14 does (kombu's
json.loads of the body, then rpc_common.deserialize_msg) and compares with
what the Go decoder read, given on stdin as a JSON list of
{"body": <latin-1 text of the body>, "ok": bool, "msg": {key: value}}.
Prints one line per disagreement, apart from three known ones where the
Go driver is deliberately more lenient (docs/FUZZING.md): a body that is not
UTF-8 (kombu refuses it, Go reads invalid bytes as U+FFFD), NaN and
Infinity (null to Go), and lone surrogate escapes (U+FFFD to Go).

Used by fuzz_test.go (TestEnvelopeCorpusAgainstPython).
"""
import json
import math
import sys

from oslo_messaging._drivers import common as rpc_common


def same(a, b):
    """a, from Go, equals b, from Python: NaN and Infinity tokens are null
    to Go."""
    if a is None and isinstance(b, float) and (math.isnan(b) or math.isinf(b)):
        return True
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def lenient(v):
    """Python's value as the Go driver reads it."""
    if isinstance(v, str):
        return v.encode('utf-8', 'surrogatepass').decode('utf-8', 'replace') if any(
            0xd800 <= ord(c) <= 0xdfff for c in v) else v
    if isinstance(v, list):
        return [lenient(x) for x in v]
    if isinstance(v, dict):
        return {lenient(k): lenient(x) for k, x in v.items()}
    return v


def python_decode(body):
    try:
        msg = json.loads(body.decode('utf-8'))
        if not isinstance(msg, dict):
            return None
        out = rpc_common.deserialize_msg(msg)
        return out if isinstance(out, dict) else None
    except Exception:
        return None


for case in json.load(sys.stdin):
    body = case['body'].encode('latin-1')
    try:
        body.decode('utf-8')
    except UnicodeDecodeError:
        continue
    py = python_decode(body)
    if py is None:
        if case['ok']:
            print('Go decodes, Python refuses: %r' % body)
        continue
    if not case['ok']:
        print('Python decodes, Go refuses: %r' % body)
        continue
    go = case['msg']
    py = lenient(py)
    if not same(go, py):
        print('different: %r\n  Go     %r\n  Python %r' % (body, go, py))
