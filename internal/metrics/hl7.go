package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"radbridge/hl7/receiver"
)

// HL7Stats is what the MLLP receiver reports (*receiver.Server).
type HL7Stats interface{ Stats() receiver.Stats }

type hl7Collector struct {
	src                                  HL7Stats
	messages, frames, discarded, handler *prometheus.Desc
	connsOpen, conns, connsRejected      *prometheus.Desc
}

// NewHL7Collector reads the MLLP receiver's counters at scrape time.
func NewHL7Collector(src HL7Stats) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
	}
	return &hl7Collector{
		src:           src,
		messages:      d("hl7_messages_total", "HL7 messages answered, by message type (CODE^TRIGGER of a supported type, other, unparsed) and ACK code (MSA-1 AA/AE/AR/CA/CE/CR, or none).", "message_type", "ack_code"),
		frames:        d("hl7_frames_rejected_total", "MLLP frames rejected before parsing, by reason (oversized: over --mllp-max-message; invalid: end block not followed by CR).", "reason"),
		discarded:     d("mllp_discarded_bytes_total", "Bytes received outside MLLP frames or in dropped frames."),
		handler:       d("hl7_store_failures_total", "HL7 messages that could not be recorded in the ingest log (answered AE, to be resent)."),
		connsOpen:     d("mllp_connections_open", "MLLP connections open now."),
		conns:         d("mllp_connections_total", "MLLP connections accepted and served."),
		connsRejected: d("mllp_connections_rejected_total", "MLLP connections closed at once because --mllp-max-connections were open."),
	}
}

func (c *hl7Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.frames, c.discarded, c.handler, c.connsOpen, c.conns, c.connsRejected} {
		ch <- d
	}
}

func (c *hl7Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for k, v := range st.ByType {
		counter(c.messages, v, k.Type, k.Ack)
	}
	counter(c.frames, st.OversizedFrames, "oversized")
	counter(c.frames, st.InvalidFrames, "invalid")
	counter(c.discarded, st.DiscardedBytes)
	counter(c.handler, st.HandlerErrors)
	ch <- prometheus.MustNewConstMetric(c.connsOpen, prometheus.GaugeValue, float64(st.ActiveConnections))
	counter(c.conns, st.Connections)
	counter(c.connsRejected, st.RejectedConnections)
}
