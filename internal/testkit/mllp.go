package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"radbridge/hl7"
)

// RISOrder is a RIS's new order (ORM^O01 v2.3, written for the tests, no
// real data) for patient MRN4711 of NORTHWING, accession ACC1001, with
// non-ASCII names; {{ctl}} stands for its control id (MSH-10). Segments
// end with \n, as WriteHL7 wants.
const RISOrder = `MSH|^~\&|RADRIS|NORTHWING|RADBRIDGE|IMAGING|20260310083000+0100||ORM^O01|{{ctl}}|P|2.3|||||D|UNICODE UTF-8
PID|1||998877665^^^SSA^SS~MRN4711^^^NORTHWING^MR||MÜLLER-ŞAHIN^ZOË^^^^^L||19700101|F
PV1|1|O|RAD^^^NORTHWING
ORC|NW|PLC1001|FIL1001||SC||^^^20260310090000^^S||20260310082900+0100|CLERK^RIS||1234^REFERRER^SAM^^^DR
OBR|1|PLC1001|FIL1001|71250^CT CHEST W/O CONTRAST^C4|S||20260310082900||||||Cough \T\ fever \S\ 3 days|||1234^REFERRER^SAM^^^DR||ACC1001|RP1|SPS1||||CT|||1^^^20260310090000^^S`

// WriteHL7 writes msg (lines separated by \n) to a temporary file with \r
// segment ends, for mllp_send --loose, and returns its path.
func WriteHL7(tb testing.TB, name, msg string) string {
	tb.Helper()
	return writeFile(tb, name+".hl7", strings.ReplaceAll(msg, "\n", "\r")+"\r")
}

// WriteHL7Framed writes msg in one MLLP frame, for mllp_send without
// --loose (which rewrites every message to start with MSH|^~\&|).
func WriteHL7Framed(tb testing.TB, name, msg string) string {
	tb.Helper()
	return writeFile(tb, name+".hl7", "\x0b"+strings.ReplaceAll(msg, "\n", "\r")+"\r\x1c\r")
}

func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// MLLPSend sends one file with python-hl7's mllp_send (bin, see Peer) to
// addr (host:port), at most 20 s, and returns the ACK. A file that ends
// with an MLLP end block (see WriteHL7Framed) is sent as framed, without
// --loose (which only knows the default delimiters).
func MLLPSend(tb testing.TB, bin, addr, file string) *hl7.Message {
	tb.Helper()
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"20", bin, "--loose", "-f", file, "-p", port, host}
	if b, _ := os.ReadFile(file); strings.HasSuffix(string(b), "\x1c\r") {
		args = slices.Delete(args, 2, 3)
	}
	out, err := exec.Command("timeout", args...).Output()
	if err != nil {
		tb.Fatalf("mllp_send %s: %v\n%s", file, err, out)
	}
	frame := strings.Trim(string(out), "\x0b\x1c\r\n") // mllp_send prints the frame as received
	ack, err := hl7.Parse([]byte(frame))
	if err != nil {
		tb.Fatalf("ACK does not parse: %v\n%q", err, out)
	}
	return ack
}
