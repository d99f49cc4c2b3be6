package cli

import (
	"strings"
	"testing"
)

// TestRunDispatch: without a command the usage goes to stderr (exit 2),
// help prints it on stdout (exit 0), and a mistyped command is one line
// naming the nearest one (exit 2).
func TestRunDispatch(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{nil, 2, "", usage},
		{[]string{"help"}, 0, usage, ""},
		{[]string{"--help"}, 0, usage, ""},
		{[]string{"stauts"}, 2, "", "radbridge: unknown command \"stauts\": did you mean status? (radbridge help lists the commands)\n"},
		{[]string{"frobnicate"}, 2, "", "radbridge: unknown command \"frobnicate\" (radbridge help lists the commands)\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, tc.args...)
			if code != tc.code || stdout != tc.stdout || stderr != tc.stderr {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
