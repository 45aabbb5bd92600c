package broker

import "github.com/prometheus/client_golang/prometheus"

// osloMetrics are the oslo.messaging metrics read from Osloz.
var osloMetrics = []promMetric{}

func (p *promCollector) collectOslo(ch chan<- prometheus.Metric) {}
