package broker

import (
	"errors"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestAutoDeleteExchangeCascade: an auto-delete exchange whose only binding
// leads to an exchange that is deleted goes too, down the chain, as in
// RabbitMQ (amqp091-go's TestConnectionRecoveryAutoDeleteExchangeCascade
// relies on it).
func TestAutoDeleteExchangeCascade(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	for _, name := range []string{"up", "mid", "down"} {
		if err := ch.ExchangeDeclare(name, "fanout", false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.ExchangeBind("mid", "", "up", false, nil); err != nil { // up -> mid
		t.Fatal(err)
	}
	if err := ch.ExchangeBind("down", "", "mid", false, nil); err != nil { // mid -> down
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", "down", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(q.Name, false, false, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"down", "mid", "up"} {
		probe := openCh(t, c)
		err := probe.ExchangeDeclarePassive(name, "fanout", false, true, false, false, nil)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
			t.Errorf("exchange %q after its chain lost its queue: %v, want 404", name, err)
		}
	}
}
