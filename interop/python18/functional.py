"""Upstream's functional tests (oslo_messaging.tests.functional.test_functional)
of the oslo.messaging peer, in one of the configurations of common.py.

Usage: RPC_TRANSPORT_URL=U NOTIFY_TRANSPORT_URL=U functional.py CONFIG TEST...
e.g. functional.py kolla oslo_messaging.tests.functional.test_functional.CallTestCase

The tests read the transport URLs only: each builds its own ConfigOpts (or
uses cfg.CONF through a ConfFixture that resets it after every test), loads
no configuration file, and the rabbit driver reads no option from the URL
query. So for CONFIG other than "defaults" this wrapper applies the
configuration's options the way the tests themselves set theirs: it wraps
SkipIfNoTransportURL.setUp (the base of CallTestCase, CastTestCase and
NotifyTestCase) and calls self.config(group=..., **options) after it. The
queue manager's lock (oslo_concurrency, read from the global cfg.CONF by
lockutils) gets its lock_path through lockutils.set_defaults.

The tests themselves run unchanged under testtools; the result prints one
line per test ("result PASS: id", "result FAIL: id", "result ERROR: id",
"result SKIP: id reason"; testtools prints "FAIL: id" itself in its report) and
a closing "N passed, N failed, N skipped" line.
"""
import sys
import unittest

import testtools

import common


class LineResult(testtools.TextTestResult):
    """testtools' text result, plus one status line per test."""

    def _line(self, status, test, extra=""):
        self.stream.write("result %s: %s%s\n" % (status, test.id(), extra))
        self.stream.flush()

    def addSuccess(self, test, details=None):
        super().addSuccess(test, details=details)
        self._line("PASS", test)

    def addFailure(self, test, err=None, details=None):
        super().addFailure(test, err, details=details)
        self._line("FAIL", test)

    def addError(self, test, err=None, details=None):
        super().addError(test, err, details=details)
        self._line("ERROR", test)

    def addSkip(self, test, reason=None, details=None):
        super().addSkip(test, reason, details=details)
        self._line("SKIP", test, " " + str(reason))

    def addUnexpectedSuccess(self, test, details=None):
        super().addUnexpectedSuccess(test, details=details)
        self._line("FAIL", test, " unexpected success")


def apply_config(config):
    opts = common.options(config, "functional")
    if not opts:
        return
    lock = opts.pop("oslo_concurrency", {}).get("lock_path")
    if lock:
        from oslo_concurrency import lockutils
        lockutils.set_defaults(lock)
    from oslo_messaging.tests.functional import utils
    base_setup = utils.SkipIfNoTransportURL.setUp

    def setUp(self, *args, **kwargs):
        base_setup(self, *args, **kwargs)
        for group, values in opts.items():
            self.config(group=group, **values)

    utils.SkipIfNoTransportURL.setUp = setUp


def main():
    config, names = sys.argv[1], sys.argv[2:]
    apply_config(config)
    suite = unittest.TestLoader().loadTestsFromNames(names)
    result = LineResult(sys.stdout)
    result.startTestRun()
    try:
        suite.run(result)
    finally:
        result.stopTestRun()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skip_reasons) and sum(len(v) for v in result.skip_reasons.values())
    passed = result.testsRun - failed - skipped
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
