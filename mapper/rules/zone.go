package rules

import (
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // a recorded zone loads the same on every machine
)

// zones caches loaded locations by IANA name.
var zones sync.Map

// zoneOf returns the location of a zone name recorded with an observation
// (ingest.Observation.Zone), or def when none was recorded (records from
// before zones were) or the name does not load.
func zoneOf(name string, def *time.Location) *time.Location {
	if name == "" {
		return def
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location)
	}
	l, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return def
	}
	zones.Store(name, l)
	return l
}

// zone is the zone of times without an offset in records that carry no
// zone: Options.Zone (--timezone), else the machine's (dicomZone), which
// is what every record was read in before zones were recorded.
func (o Options) zone() *time.Location {
	if o.Zone != nil {
		return o.Zone
	}
	return dicomZone
}

// recZone is the zone of the current observation's times without an
// offset.
func (c *Context) recZone(o Options) *time.Location {
	return zoneOf(c.Rec.Zone, o.zone())
}

// utcOffset parses an offset from UTC, +HHMM or -HHMM (HL7 DTM, DICOM
// Timezone Offset From UTC (0008,0201)), into a fixed zone.
func utcOffset(s string) (*time.Location, bool) {
	if len(s) != 5 || (s[0] != '+' && s[0] != '-') {
		return nil, false
	}
	h, err1 := strconv.Atoi(s[1:3])
	m, err2 := strconv.Atoi(s[3:5])
	if err1 != nil || err2 != nil || s[1] < '0' || s[3] < '0' || h > 14 || m > 59 {
		return nil, false
	}
	off := h*3600 + m*60
	if s[0] == '-' {
		off = -off
	}
	return time.FixedZone("", off), true
}
