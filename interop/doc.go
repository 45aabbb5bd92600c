// Package interop proves oslogo's rabbit:// transport against the real
// peer: Python oslo.messaging 14 (Debian's python3-oslo.messaging, run with
// /usr/bin/python3) on RabbitMQ. The Python sides live in interop/python;
// the Go tests start them, drive the scenarios in both directions (RPC
// calls, casts, fanout, named servers, round-robin, namespaces and
// versions, remote exceptions, timeouts, call-monitor heartbeats, request
// context, unicode, nested and 1 MB payloads; notifications with both
// drivers, pools and every priority) and assert on what each side saw.
//
// The current upstream release, oslo.messaging 18.1.0 (internal/oslo18,
// interop/python18), runs here too, in the defaults, kolla and kolla-qm
// configurations, against itself on RabbitMQ and on the embedded broker,
// and with its own functional tests (docs/INTEROP.md).
package interop
