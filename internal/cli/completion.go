package cli

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"radbridge/internal/config"
)

// completionCommand is one subcommand and its flag names (without dashes).
type completionCommand struct {
	name  string
	flags []string
}

// flagNames lists the flags of fs, sorted.
func flagNames(fs *flag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	sort.Strings(out)
	return out
}

// completionCommands are the subcommands completed by the shell scripts.
// serve and demo take the daemon's flags, read from the real flag set so
// a new flag completes without touching this file; demo's own flags and
// the other commands' flags are listed here and must follow their files
// (internal/app/demo.go; tail.go, clients.go, version.go here).
func completionCommands() []completionCommand {
	serveFlags := flagNames((&config.Config{}).FlagSet("serve"))
	return []completionCommand{
		{"serve", serveFlags},
		{"demo", append([]string{"loop", "patients", "speed"}, serveFlags...)},
		{"tail", append([]string{"addr", "from-now", "json", "patient", "resource-type", "retry-for", "since", "token-file", "type"}, tlsClientFlagNames...)},
		{"echo", append([]string{"addr", "aec", "aet", "timeout"}, tlsClientFlagNames...)},
		{"store", append([]string{"addr", "aec", "aet", "timeout"}, tlsClientFlagNames...)},
		{"send-hl7", append([]string{"addr", "timeout"}, tlsClientFlagNames...)},
		{"version", []string{"json"}},
		{"healthcheck", append([]string{"addr", "timeout"}, tlsClientFlagNames...)},
		{"status", append([]string{"addr", "json", "timeout", "token-file"}, tlsClientFlagNames...)},
		{"explain", append([]string{"accession", "addr", "json", "order", "patient", "study", "timeout", "token-file"}, tlsClientFlagNames...)},
		{"check-config", append([]string{"bind"}, serveFlags...)},
		{"replay", append([]string{"check", "dry-run", "from"}, serveFlags...)},
		{"completion", nil},
		{"help", nil},
	}
}

func dashed(flags []string) string {
	out := make([]string, len(flags))
	for i, f := range flags {
		out[i] = "--" + f
	}
	return strings.Join(out, " ")
}

// completion prints a shell completion script.
func completion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: radbridge completion bash|zsh")
		return 2
	}
	switch args[0] {
	case "bash":
		writeBashCompletion(stdout)
	case "zsh":
		writeZshCompletion(stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, `usage: radbridge completion bash|zsh

bash: source <(radbridge completion bash)   (or save it in /etc/bash_completion.d/radbridge)
zsh:  source <(radbridge completion zsh)    (or save it as _radbridge in a directory on $fpath)
`)
	default:
		fmt.Fprintf(stderr, "radbridge completion: unknown shell %q: want bash or zsh\n", args[0])
		return 2
	}
	return 0
}

func writeBashCompletion(w io.Writer) {
	cmds := completionCommands()
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# bash completion for radbridge; load with: source <(radbridge completion bash)
_radbridge() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	if [[ ${COMP_CWORD} -eq 1 ]]; then
		COMPREPLY=($(compgen -W %q -- "$cur"))
		return
	fi
	local flags=""
	case "${COMP_WORDS[1]}" in
`, strings.Join(names, " "))
	for _, c := range cmds {
		switch {
		case c.name == "completion":
			fmt.Fprintf(w, "\t%s) [[ ${COMP_CWORD} -eq 2 ]] && COMPREPLY=($(compgen -W \"bash zsh\" -- \"$cur\")); return ;;\n", c.name)
		case len(c.flags) > 0:
			fmt.Fprintf(w, "\t%s) flags=%q ;;\n", c.name, dashed(c.flags))
		}
	}
	fmt.Fprint(w, `	esac
	if [[ "$cur" == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	fi
}
complete -o default -F _radbridge radbridge
`)
}

func writeZshCompletion(w io.Writer) {
	cmds := completionCommands()
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `#compdef radbridge
# zsh completion for radbridge; load with: source <(radbridge completion zsh)
_radbridge() {
	local -a cmds flags
	cmds=(%s)
	if (( CURRENT == 2 )); then
		compadd -a cmds
		return
	fi
	case "${words[2]}" in
`, strings.Join(names, " "))
	for _, c := range cmds {
		switch {
		case c.name == "completion":
			fmt.Fprintf(w, "\t%s) (( CURRENT == 3 )) && compadd bash zsh; return ;;\n", c.name)
		case len(c.flags) > 0:
			fmt.Fprintf(w, "\t%s) flags=(%s) ;;\n", c.name, dashed(c.flags))
		}
	}
	fmt.Fprint(w, `	esac
	if [[ "$PREFIX" == -* ]]; then
		compadd -a flags
	else
		_files
	fi
}
if [[ "${funcstack[1]}" == "_radbridge" ]]; then
	_radbridge "$@"
else
	compdef _radbridge radbridge
fi
`)
}
