package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// FlagError is a command-line mistake (an unknown flag, a missing or bad
// value), said in one line with the way out: the nearest flag name and
// where the flags are listed.
type FlagError struct {
	Msg string
}

func (e *FlagError) Error() string { return e.Msg }

// ParseFlags parses args into fs without the flag package's usage dump:
// -h prints the flags to help and returns flag.ErrHelp; a mistake returns
// a *FlagError.
func ParseFlags(fs *flag.FlagSet, args []string, help io.Writer) error {
	usage := fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(help)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return flag.ErrHelp
	}
	if err != nil {
		return explainFlagError(fs, err)
	}
	return nil
}

var (
	undefinedFlag = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	needsArgument = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	invalidValue  = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+([^:]+): (.*)$`)
)

// explainFlagError turns the flag package's error into a FlagError.
func explainFlagError(fs *flag.FlagSet, err error) error {
	help := fmt.Sprintf("%s -h lists the flags", fs.Name())
	msg := err.Error()
	if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
		name, _, _ := strings.Cut(m[1], "=")
		if s := Suggest(fs, name); s != "" {
			return &FlagError{fmt.Sprintf("unknown flag --%s: did you mean --%s? (%s)", name, s, help)}
		}
		return &FlagError{fmt.Sprintf("unknown flag --%s (%s)", name, help)}
	}
	if m := needsArgument.FindStringSubmatch(msg); m != nil {
		want := ""
		if f := fs.Lookup(m[1]); f != nil {
			want = ": want " + Expect(f)
		}
		return &FlagError{fmt.Sprintf("--%s needs a value%s (%s)", m[1], want, help)}
	}
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		if f := fs.Lookup(m[2]); f != nil {
			return &FlagError{fmt.Sprintf("--%s %q: want %s (%s)", m[2], m[1], Expect(f), help)}
		}
	}
	return &FlagError{fmt.Sprintf("%s (%s)", msg, help)}
}

// Expect describes the values flag f takes, with an example.
func Expect(f *flag.Flag) string {
	kind, ex := describe(f)
	if ex == "" {
		return kind
	}
	return kind + ", e.g. " + ex
}

// describe is the kind of value flag f takes and an example (its default
// where that is one).
func describe(f *flag.Flag) (kind, example string) {
	ex := f.DefValue
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.boolValue":
		return "true or false", ""
	case "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.uint64Value":
		if ex == "" || ex == "0" {
			ex = "100"
		}
		return "a whole number", ex
	case "*flag.float64Value":
		if ex == "" || ex == "0" {
			ex = "0.5"
		}
		return "a number", ex
	case "*flag.durationValue":
		if ex == "" || ex == "0s" {
			ex = "30s"
		}
		return "a duration with a unit (ms, s, m, h)", ex
	}
	return "a text value", ex
}

// Suggest is the flag of fs nearest to name ("" when none is near): one
// that name is a prefix of, else the one fewest edits away, within a third
// of the name's length.
func Suggest(fs *flag.FlagSet, name string) string {
	name = strings.ToLower(name)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		if len(name) >= 3 && strings.HasPrefix(n, name) {
			return n
		}
	}
	best, bestD := "", max(2, len(name)/3)+1
	for _, n := range names {
		if d := editDistance(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
