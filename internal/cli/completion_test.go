package cli

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"

	"radbridge/internal/config"
)

func TestCompletion(t *testing.T) {
	serveFlags := flagNames((&config.Config{}).FlagSet("serve"))
	for _, shell := range []string{"bash", "zsh"} {
		t.Run(shell, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Run(context.Background(), []string{"completion", shell}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			script := stdout.String()
			for _, f := range serveFlags {
				if !strings.Contains(script, "--"+f+" ") && !strings.Contains(script, "--"+f+"\"") && !strings.Contains(script, "--"+f+")") {
					t.Errorf("%s script does not complete serve flag --%s", shell, f)
				}
			}
			for _, c := range completionCommands() {
				if !strings.Contains(script, c.name) {
					t.Errorf("%s script does not complete command %s", shell, c.name)
				}
			}
			if sh, err := exec.LookPath(shell); err == nil {
				cmd := exec.Command(sh, "-n")
				cmd.Stdin = strings.NewReader(script)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s -n: %v\n%s", shell, err, out)
				}
			}
		})
	}
	if code := Run(context.Background(), []string{"completion", "fish"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("completion fish: exit %d, want 2", code)
	}
}
