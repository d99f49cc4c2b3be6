// Command radbridge is the radbridge daemon and its client commands.
package main

import (
	"context"
	"os"

	"radbridge/internal/cli"
)

func main() {
	os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
