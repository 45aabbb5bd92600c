// Package faults holds oslogo's fault scenarios: the embedded broker
// killed with SIGKILL under confirmed load, its data directory full, a
// three-node RabbitMQ cluster losing one node after another, network
// faults injected by internal/faultproxy, an RPC server killed while it
// holds casts, and a notification queue nobody consumes filling beside RPC
// traffic.
//
// The tests are behind the "faults" build tag and run with
// `make test-faults`; `-short` runs shorter loads. Each scenario prints one
// line "FAULTS-RESULT {json}" with what it sent, what the broker
// confirmed, what was received, lost and duplicated, and how long
// recovery took; with FAULTS_RESULTS=file the lines are appended there too.
// docs/RELIABILITY.md collects the figures of a real run.
package faults
