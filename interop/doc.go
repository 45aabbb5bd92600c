// Package interop proves oslogo's rabbit:// transport against the real
// peer: Python oslo.messaging 14 (Debian's python3-oslo.messaging, run with
// /usr/bin/python3) on RabbitMQ. The Python sides live in interop/python;
// the Go tests start them, drive the scenarios in both directions (RPC
// calls, casts, fanout, named servers, round-robin, namespaces and
// versions, remote exceptions, timeouts, call-monitor heartbeats, request
// context, unicode, nested and 1 MB payloads; notifications with both
// drivers, pools and every priority) and assert on what each side saw.
package interop
