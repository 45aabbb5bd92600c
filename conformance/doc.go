// Package conformance runs the transport conformance suite
// (driver/drivertest) across process boundaries that no single driver
// package owns: the rabbit:// driver against oslogo's own embedded broker.
package conformance
