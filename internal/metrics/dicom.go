package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"radbridge/dicom/scp"
)

// DICOMStats is what the DICOM SCP reports (*scp.Server).
type DICOMStats interface{ Stats() scp.Stats }

type dicomCollector struct {
	src                                        DICOMStats
	assocs, rejected, aborted, open            *prometheus.Desc
	instances, echoes, notifications, received *prometheus.Desc
}

// NewDICOMCollector reads the DICOM SCP's counters at scrape time.
func NewDICOMCollector(src DICOMStats) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
	}
	return &dicomCollector{
		src:           src,
		assocs:        d("dicom_associations_total", "DICOM association requests, by result (accepted, rejected).", "result"),
		rejected:      d("dicom_associations_rejected_total", "DICOM associations rejected, by A-ASSOCIATE-RJ reason (called_ae_not_recognized, calling_ae_not_recognized, local_limit_exceeded, temporary_congestion, protocol_version, application_context, other).", "reason"),
		aborted:       d("dicom_associations_aborted_total", "DICOM associations that ended in an A-ABORT or a broken connection instead of a release (including setups that failed)."),
		open:          d("dicom_associations_open", "DICOM associations open now, including those negotiating."),
		instances:     d("dicom_instances_total", "C-STORE requests answered, by DIMSE status class (success: recorded in the ingest log; failure: refused, the sender keeps the instance).", "status_class"),
		echoes:        d("dicom_echoes_total", "C-ECHO requests answered."),
		notifications: d("dicom_notifications_total", "Notifications answered with success, by kind (ian: Instance Availability Notification N-CREATE; mpps: MPPS N-CREATE/N-SET).", "kind"),
		received:      d("dicom_received_bytes_total", "Bytes of C-STORE data sets received."),
	}
}

func (c *dicomCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.assocs, c.rejected, c.aborted, c.open, c.instances, c.echoes, c.notifications, c.received} {
		ch <- d
	}
}

func (c *dicomCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.assocs, st.AssociationsAccepted, "accepted")
	counter(c.assocs, st.AssociationsRejected, "rejected")
	for reason, v := range st.RejectedBy {
		counter(c.rejected, v, reason)
	}
	counter(c.aborted, st.AssociationsAborted)
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(st.ActiveAssociations))
	counter(c.instances, st.InstancesStored, "success")
	counter(c.instances, st.StoreFailures, "failure")
	counter(c.echoes, st.Echoes)
	counter(c.notifications, st.IANs, "ian")
	counter(c.notifications, st.MPPS, "mpps")
	counter(c.received, st.BytesReceived)
}
