package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"radbridge/internal/app"
)

func version(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("radbridge version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the build information as JSON")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	bi := app.ReadBuildInfo()
	if *asJSON {
		b, _ := json.Marshal(bi)
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	fmt.Fprintln(stdout, bi)
	return 0
}
