package part10

import (
	"os"
	"testing"
)

// TestPartFileKeepsTheFirstWriteError: a failed write does not stop the
// writer (the data set must still be read off the wire), and commit then
// fails with that error instead of storing a truncated file.
func TestPartFileKeepsTheFirstWriteError(t *testing.T) {
	dir := t.TempDir()
	p, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	if n, err := p.Write([]byte("DICM")); n != 4 || err != nil {
		t.Fatalf("first write: %d, %v", n, err)
	}
	p.f.Close() // every write from now on fails, as on a full disk
	if n, err := p.Write([]byte("more")); n != 4 || err != nil {
		t.Fatalf("write after a failure: %d, %v; want 4, nil", n, err)
	}
	if _, err := p.Commit("1.2", "1.2.3", "1.2.3.4"); err == nil {
		t.Fatal("commit succeeded after a failed write")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 { // only the temporary file
		t.Errorf("store dir holds %d entries after a failed commit, want the temporary file only", len(entries))
	}
}
