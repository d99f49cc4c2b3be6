package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"radbridge/auth"
)

// FuzzJWT feeds bearer tokens from the network to the JWT authenticator.
// The header and payload are fuzzed and then signed with the configured
// HS256 secret, so that the claim handling behind the signature check
// (exp, nbf, iss, aud, the patient claims) sees arbitrary JSON too; raw is
// an unsigned token as a client might send it. Every token is accepted
// with a subject or refused with ErrUnauthenticated or ErrTokenExpired;
// nothing panics.
func FuzzJWT(f *testing.F) {
	secret := []byte("fuzz-secret-fuzz-secret-fuzz-secret!")
	dir := f.TempDir()
	keyFile := filepath.Join(dir, "hs256")
	if err := os.WriteFile(keyFile, secret, 0o600); err != nil {
		f.Fatal(err)
	}
	a, err := auth.New(auth.Config{Mode: "jwt", JWTKeyFile: keyFile, JWTIssuer: "idp", JWTAudience: "radbridge", Now: clock})
	if err != nil {
		f.Fatal(err)
	}
	hs := `{"alg":"HS256","typ":"JWT"}`
	good := `{"sub":"dr-who","iss":"idp","aud":["x","radbridge"],"exp":1772370000,"iat":1772366400`
	f.Add(hs, good+`}`, "")
	f.Add(hs, good+`,"patient":"P1"}`, "")
	f.Add(hs, good+`,"patient":["P1","P2"],"patients":["P3"],"patient_ids":["P4"]}`, "")
	f.Add(hs, good+`,"patient":7}`, "")
	f.Add(hs, good+`,"patient":""}`, "")
	f.Add(hs, `{"sub":"x","iss":"idp","aud":"radbridge","exp":1}`, "")
	f.Add(hs, `{"iss":"idp","aud":"radbridge","exp":1772370000,"nbf":1772370000}`, "")
	f.Add(`{"alg":"none"}`, good+`}`, "")
	f.Add(`{"alg":"RS256","kid":"x"}`, good+`}`, "")
	f.Add(hs, `[]`, "")
	f.Add("", "", "eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("", "", "a.b.c.d")
	f.Fuzz(func(t *testing.T, header, payload, raw string) {
		token := raw
		if raw == "" {
			signing := b64([]byte(header)) + "." + b64([]byte(payload))
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(signing))
			token = signing + "." + b64(m.Sum(nil))
		}
		p, err := a.Authenticate(context.Background(), token)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) && !errors.Is(err, auth.ErrTokenExpired) {
				t.Fatalf("%q: error %v is neither ErrUnauthenticated nor ErrTokenExpired", token, err)
			}
			if p != nil {
				t.Fatalf("%q: a principal with an error", token)
			}
			return
		}
		if p == nil || p.Subject == "" {
			t.Fatalf("%q: accepted without a subject: %+v", token, p)
		}
		// A token naming patients sees only them.
		if p.Patients != nil && p.MayRead("\x00not-a-listed-patient") {
			t.Fatalf("%q: patients %q, yet may read another", token, p.Patients)
		}
	})
}
