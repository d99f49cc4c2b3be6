package app

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"radbridge/internal/opsapi"
	"radbridge/mapper"
	"radbridge/store"
)

// statusPattern is where the HTTP front serves the daemon's state.
const statusPattern = "GET /v1/status"

// deadLettersShown bounds the records GET /v1/status lists.
const deadLettersShown = 20

// Status reports the daemon's state.
func (d *Daemon) Status(ctx context.Context) opsapi.Status {
	bi := ReadBuildInfo()
	s := opsapi.Status{Version: bi.Version, Build: bi, Started: d.started.UTC(), UptimeSeconds: time.Since(d.started).Round(time.Second).Seconds(), State: "ready"}
	if err := d.readyErr(); err != nil {
		s.State = err.Error()
	} else {
		s.Ready = true
	}
	add := func(name, addr string, tls bool) {
		if addr != "" {
			s.Listeners = append(s.Listeners, opsapi.Listener{Name: name, Address: addr, TLS: tls})
		}
	}
	add("grpc", addrOf(d.grpcLn), false)
	add("grpc-tls", addrOf(d.grpcTLSLn), true)
	add("http", addrOf(d.httpLn), false)
	add("https", addrOf(d.httpsLn), true)
	add("mllp", addrOf(d.mllpLn), false)
	add("mllp-tls", addrOf(d.mllpTLSLn), true)
	add("dicom", addrOf(d.dicomLn), false)
	add("dicom-tls", addrOf(d.dicomTLSLn), true)
	add("metrics", addrOf(d.metricsLn), false)

	s.Store = opsapi.StoreStatus{Embedded: d.cfg.NATSURL == "", Location: d.cfg.DataDir, Connected: d.store.Healthy()}
	if d.cfg.NATSURL != "" {
		s.Store.Location = store.RedactURLs(d.cfg.NATSURL)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	streams, err := d.store.Streams(ctx)
	s.Store.Streams = streams
	if err != nil {
		s.Store.Error = err.Error()
	}
	for _, st := range streams {
		switch st.Name {
		case store.IngestStream:
			s.Mapper.IngestHead = st.LastSequence
		case store.EventsStream:
			s.Mapper.EventsLastSequence = st.LastSequence
		}
	}

	role, holder := d.mapper.Status()
	s.Mapper.Clustered = d.mapper.Clustered()
	s.Mapper.Role = role
	if role == "single" {
		s.Mapper.Role = "leader"
	}
	s.Mapper.Leader = holder
	if m := d.mapper.Current(); m != nil {
		s.Mapper.Running = true
		s.Mapper.Ready = m.Ready()
		s.Mapper.AppliedSequence = m.Applied()
		s.Mapper.QuietPeriodStudies = m.PendingTimers()
		if s.Mapper.IngestHead > s.Mapper.AppliedSequence {
			s.Mapper.Lag = s.Mapper.IngestHead - s.Mapper.AppliedSequence
		}
	}

	s.DeadLetters.Records = []mapper.DeadLetter{}
	if dls, err := d.store.DeadLetters().DeadLetters(ctx); err != nil {
		s.DeadLetters.Error = err.Error()
	} else {
		s.DeadLetters.Count = len(dls)
		s.DeadLetters.Records = dls[:min(len(dls), deadLettersShown)]
	}

	s.Subscribers = map[string]int64{"grpc": 0, "websocket": 0, "room": 0}
	for t, n := range d.hub.Stats().Subscribers {
		s.Subscribers[t] += n
	}
	if d.hl7Srv != nil {
		st := d.hl7Srv.Stats()
		h := &opsapi.HL7Status{Messages: st.Messages, Acks: map[string]int64{}, ConnectionsOpen: st.ActiveConnections, Connections: st.Connections,
			RejectedFrames: st.OversizedFrames + st.InvalidFrames, StoreFailures: st.HandlerErrors}
		for code, n := range st.Acks {
			if n > 0 {
				h.Acks[code] = n
			}
		}
		s.HL7 = h
	}
	if d.dicomSrv != nil {
		st := d.dicomSrv.Stats()
		s.DICOM = &opsapi.DICOMStatus{AssociationsOpen: st.ActiveAssociations, AssociationsAccepted: st.AssociationsAccepted,
			AssociationsRejected: st.AssociationsRejected, AssociationsAborted: st.AssociationsAborted, InstancesStored: st.InstancesStored,
			StoreFailures: st.StoreFailures, Echoes: st.Echoes, IANs: st.IANs, MPPS: st.MPPS}
	}
	return s
}

// statusHandler serves Status as JSON.
func (d *Daemon) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Status(r.Context()))
	})
}
