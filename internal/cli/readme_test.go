package cli

import (
	"os"
	"strings"
	"testing"
)

// TestREADMECommands: the README's commands table names every command.
func TestREADMECommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, cmds, ok := strings.Cut(string(b), "\n## Commands\n")
	if !ok {
		t.Fatal(`README has no section "Commands"`)
	}
	if i := strings.Index(cmds, "\n## "); i >= 0 {
		cmds = cmds[:i]
	}
	for _, c := range completionCommands() {
		if !strings.Contains(cmds, "| `radbridge "+c.name+"` |") {
			t.Errorf("README Commands lacks radbridge %s", c.name)
		}
	}
}
