// Package amqp091 is the AMQP 0-9-1 wire codec of the embedded broker:
// frames, field tables and the method structs generated from the
// RabbitMQ-extended spec XML kept in spec/.
//
// Decoding never panics on hostile input: every read is bounds-checked and
// reports ErrMalformed (wrapped) instead.
package amqp091

//go:generate go run ./gen -spec spec/amqp0-9-1.stripped.extended.xml -ext spec/rabbitmq-extensions.xml -out spec_gen.go
