package messaging

import "time"

// Observer receives what a transport's RPC clients, notifiers and
// notification listeners did, for metrics. Set TransportConfig.Observer;
// nil (the default) observes nothing and costs nothing. The package
// messaging/prommetrics implements it with Prometheus metrics, so that
// applications that do not ask for metrics do not import Prometheus.
//
// The methods are called on the goroutine of the operation, after it
// ended; they must be quick and safe for concurrent use. Embed
// NopObserver to implement only some of them.
type Observer interface {
	// CallDone reports an RPC call to method on topic that ended after
	// elapsed with err: nil, an error matching ErrTimeout, a *RemoteError
	// (the server raised), or another error.
	CallDone(topic, method string, elapsed time.Duration, err error)
	// CastDone reports an RPC cast of method to topic and its error.
	CastDone(topic, method string, err error)
	// NotificationSent reports a Notify call and its error (the drivers'
	// errors joined).
	NotificationSent(priority Priority, eventType string, err error)
	// NotificationReceived reports a notification a listener received,
	// before its handlers run.
	NotificationReceived(priority Priority, eventType string)
}

// NopObserver implements Observer by doing nothing.
type NopObserver struct{}

// CallDone does nothing.
func (NopObserver) CallDone(string, string, time.Duration, error) {}

// CastDone does nothing.
func (NopObserver) CastDone(string, string, error) {}

// NotificationSent does nothing.
func (NopObserver) NotificationSent(Priority, string, error) {}

// NotificationReceived does nothing.
func (NopObserver) NotificationReceived(Priority, string) {}
