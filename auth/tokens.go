package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"os"
	"strings"
)

// MinTokenLen is the shortest static token accepted.
const MinTokenLen = 16

// Tokens authenticates static bearer tokens. It keeps only their SHA-256
// hashes and compares them in constant time.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	hash     [sha256.Size]byte
	subject  string
	patients []string
	roles    []string
}

// LoadTokens reads a tokens file (see ReadTokens).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	t, err := ReadTokens(f)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return t, nil
}

// ReadTokens parses a tokens file: one token a line,
//
//	TOKEN [SUBJECT] [patient=ID,ID...] [role=ROLE,ROLE...]
//
// separated by spaces or tabs. TOKEN has at least MinTokenLen characters;
// SUBJECT names the client (default "token-LINE"); patient= restricts the
// client to those patients (without it, every patient); role= gives it
// roles (RoleOperator). Blank lines and lines starting with # are ignored.
func ReadTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		fields := strings.Fields(s)
		e := tokenEntry{hash: sha256.Sum256([]byte(fields[0])), subject: fmt.Sprintf("token-%d", line)}
		if len(fields[0]) < MinTokenLen {
			return nil, fmt.Errorf("line %d: token shorter than %d characters", line, MinTokenLen)
		}
		if prev, ok := seen[e.hash]; ok {
			return nil, fmt.Errorf("line %d: same token as line %d", line, prev)
		}
		seen[e.hash] = line
		subject := false
		for _, f := range fields[1:] {
			switch {
			case strings.HasPrefix(f, "patient="):
				if e.patients != nil {
					return nil, fmt.Errorf("line %d: patient= given twice", line)
				}
				e.patients = []string{}
				for _, id := range strings.Split(strings.TrimPrefix(f, "patient="), ",") {
					if id == "" {
						return nil, fmt.Errorf("line %d: empty patient id in %q", line, f)
					}
					e.patients = append(e.patients, id)
				}
			case strings.HasPrefix(f, "role="):
				if e.roles != nil {
					return nil, fmt.Errorf("line %d: role= given twice", line)
				}
				e.roles = []string{}
				for _, r := range strings.Split(strings.TrimPrefix(f, "role="), ",") {
					if r != RoleOperator {
						return nil, fmt.Errorf("line %d: unknown role %q (roles: %s)", line, r, RoleOperator)
					}
					e.roles = append(e.roles, r)
				}
			case !subject && !strings.Contains(f, "="):
				e.subject, subject = f, true
			default:
				return nil, fmt.Errorf("line %d: unexpected field %q (want TOKEN [SUBJECT] [patient=ID,...] [role=operator])", line, f)
			}
		}
		t.entries = append(t.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.entries) == 0 {
		return nil, fmt.Errorf("no tokens")
	}
	return t, nil
}

// Authenticate implements Authenticator.
func (t *Tokens) Authenticate(_ context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	h := sha256.Sum256([]byte(token))
	var found *tokenEntry
	for i := range t.entries { // every entry, so the time says nothing of which matched
		if subtle.ConstantTimeCompare(h[:], t.entries[i].hash[:]) == 1 {
			found = &t.entries[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	p := &Principal{Subject: found.subject}
	if found.patients != nil {
		p.Patients = append([]string{}, found.patients...)
	}
	if found.roles != nil {
		p.Roles = append([]string{}, found.roles...)
	}
	return p, nil
}
