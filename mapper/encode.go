package mapper

import (
	"encoding/json"
	"maps"
	"slices"

	"radbridge/ingest"
	"radbridge/mapper/rules"
	"radbridge/readmodel"
)

// encodeState is json.Marshal(st), byte for byte, but writes the patients'
// stored FHIR resources (json.RawMessage, already compact and escaped by
// json.Marshal when stored) as they are: encoding/json would scan and
// compact each again, about half the time of a snapshot the mapper pauses
// for.
func encodeState(st *rules.State) ([]byte, error) {
	rest, err := json.Marshal(struct {
		Timers      map[string]*ingest.Timer       `json:"timers"`
		Studies     map[string]*rules.StudyState   `json:"studies"`
		Orders      map[string]*rules.OrderState   `json:"orders"`
		Accessions  map[string][]rules.ResourceRef `json:"accessions"`
		StudyOrders map[string][]string            `json:"study_orders,omitempty"`
		Active      map[string]int64               `json:"active,omitempty"`
		Swept       int64                          `json:"swept,omitempty"`
		Lineage     []rules.Lineage                `json:"lineage,omitempty"`
		Seen        map[string]SeenKey             `json:"seen,omitempty"`
		Applied     uint64                         `json:"applied"`
		ResourceIDs int                            `json:"resource_ids,omitempty"`
	}{st.Timers, st.Studies, st.Orders, st.Accessions, st.StudyOrders, st.Active, st.Swept, st.Lineage, st.Seen, st.Applied, st.ResourceIDs})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(rest)+patientsSize(st))
	b = append(b, `{"patients":`...)
	if b, err = appendPatients(b, st.Patients); err != nil {
		return nil, err
	}
	b = append(b, ',')
	return append(b, rest[1:]...), nil
}

func patientsSize(st *rules.State) int {
	n := 0
	for _, p := range st.Patients {
		if p == nil {
			continue
		}
		for _, m := range []map[string]json.RawMessage{p.Studies, p.Orders, p.Reports} {
			for k, v := range m {
				n += len(k) + len(v) + 8
			}
		}
		n += 64
	}
	return n
}

func appendPatients(b []byte, ps map[string]*readmodel.Patient) ([]byte, error) {
	if ps == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '{')
	for i, id := range slices.Sorted(maps.Keys(ps)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, id)
		b = append(b, ':')
		p := ps[id]
		if p == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, `{"id":`...)
		b = appendString(b, p.ID)
		b = append(b, `,"last_sequence":`...)
		b = appendUint(b, p.LastSequence)
		for _, f := range []struct {
			name string
			m    map[string]json.RawMessage
		}{{"studies", p.Studies}, {"orders", p.Orders}, {"reports", p.Reports}} {
			if len(f.m) == 0 {
				continue
			}
			b = append(b, `,"`+f.name+`":{`...)
			for j, k := range slices.Sorted(maps.Keys(f.m)) {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendString(b, k)
				b = append(b, ':')
				if v := f.m[k]; v == nil {
					b = append(b, "null"...)
				} else {
					b = append(b, v...)
				}
			}
			b = append(b, '}')
		}
		for _, f := range []struct {
			name string
			m    map[string]uint32
		}{{"body_regions", p.BodyRegions}, {"views", p.Views}} {
			if len(f.m) == 0 {
				continue
			}
			v, err := json.Marshal(f.m)
			if err != nil {
				return nil, err
			}
			b = append(b, `,"`+f.name+`":`...)
			b = append(b, v...)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendString appends s as encoding/json writes a string (HTML-escaped,
// invalid UTF-8 replaced).
func appendString(b []byte, s string) []byte {
	if simpleString(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	v, _ := json.Marshal(s)
	return append(b, v...)
}

// simpleString: printable ASCII that encoding/json writes unchanged.
func simpleString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func appendUint(b []byte, n uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}
