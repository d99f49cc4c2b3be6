package app_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Per-input caps (issue 14): each hostile input goes through the real
// port, gets the protocol's precise refusal, costs a bounded amount of
// memory, and a well-behaved peer is served right after.

// peakHeap runs f and returns the highest HeapInuse above the level before
// it, sampled every 5 ms while f runs.
func peakHeap(f func()) (peak uint64) {
	runtime.GC()
	base := heapInUse()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if h := heapInUse(); h > base && h-base > peak {
				peak = h - base
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	return peak
}

// TestHL7OrderGroupCap: an ORM with 15,000 ORC/OBR groups (under 1 MiB)
// sent with mllp_send is answered AR, ERR 207 naming the limit, located at
// the first group beyond it; nothing is recorded (no event for that
// patient), and an ordinary order right after gets AA and its event.
func TestHL7OrderGroupCap(t *testing.T) {
	bin := needPeer(t, "mllp_send")
	d := startDaemon(t, filepath.Join(t.TempDir(), "data"))
	var b strings.Builder
	b.WriteString("MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|BOMB-1|P|2.3\nPID|1||BOMB-P||DOE^JOHN\n")
	for i := 0; i < 15000; i++ {
		fmt.Fprintf(&b, "ORC|NW|P%d|F%d\nOBR|%d|P%d|F%d|71250^CT\n", i, i, i+1, i, i)
	}
	if b.Len() >= 1<<20 {
		t.Fatalf("the message is %d bytes, want under 1 MiB", b.Len())
	}
	file := writeHL7(t, "bomb", b.String())
	var got string
	var errSeg []string
	peak := peakHeap(func() {
		ack := mllpSend(t, bin, d.MLLPAddr(), file)
		got = ack.Get("MSA-1")
		if e := ack.Segment("ERR"); e != nil {
			errSeg = []string{e.Field(2), e.Component(3, 1, 1), e.Field(8)}
		}
	})
	t.Logf("ORM with 15,000 order groups: peak heap +%.1f MiB", float64(peak)/(1<<20))
	if got != "AR" || len(errSeg) != 3 || errSeg[0] != "ORC^101" || errSeg[1] != "207" || !strings.Contains(errSeg[2], "15000 order groups, more than the limit of 100") {
		t.Fatalf("ACK MSA-1 %q ERR %q; want AR, ERR-2 ORC^101, ERR-3 207, ERR-8 naming the limit", got, errSeg)
	}
	if peak > 64<<20 {
		t.Errorf("peak heap +%d MiB for one refused message, want under 64 MiB", peak>>20)
	}
	// A well-behaved RIS right after: AA and its event.
	ok := writeHL7(t, "ok", "MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|OK-1|P|2.3\nPID|1||WELL-P||DOE^JANE\nORC|NW|P1|F1\nOBR|1|P1|F1|71250^CT^C4||||||||||||||ACCW1||||||CT")
	if ack := mllpSend(t, bin, d.MLLPAddr(), ok); ack.Get("MSA-1") != "AA" {
		t.Fatalf("ordinary order after the refused one: ACK %q, want AA", ack.Bytes())
	}
	waitPatientEvents(t, "http://"+d.HTTPAddr(), "WELL-P", 1)
	if n := patientEvents(t, "http://"+d.HTTPAddr(), "BOMB-P"); n != 0 {
		t.Errorf("%d events for the refused message's patient, want 0", n)
	}
}

// patientEvents counts the events of patient in the event log.
func patientEvents(t *testing.T, base, patient string) int {
	t.Helper()
	_, list := getJSON(t, base+"/v1/events?page_size=1000&patient_id="+patient)
	evs, _ := list["events"].([]any)
	return len(evs)
}

// waitPatientEvents waits (at most 30 s) for n events of patient.
func waitPatientEvents(t *testing.T, base, patient string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for patientEvents(t, base, patient) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %d events for %s within 30s", n, patient)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
