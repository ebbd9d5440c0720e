package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// mosquittoPasswd runs the real mosquitto_passwd with args.
func mosquittoPasswd(t *testing.T, args ...string) {
	t.Helper()
	needTools(t, "mosquitto_passwd")
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mosquitto_passwd", args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
	}
}

// Hashes written by the real mosquitto_passwd, in each format it writes:
// $7$ at its default (101 iterations in 2.0, 210,000 in 2.1), $7$ at
// 210,000 chosen with -I, and $6$ (-H sha512).
func TestVerifyMosquittoPasswd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pw")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "alice's secret")
	mosquittoPasswd(t, "-I", "210000", "-b", path, "bob", "s3cret:with:colons")
	mosquittoPasswd(t, "-H", "sha512", "-b", path, "carol", "ünïcödé")
	b, _ := os.ReadFile(path)
	t.Logf("mosquitto_passwd wrote:\n%s", b)
	for _, want := range []string{"alice:$7$", "bob:$7$210000$", "carol:$6$"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("mosquitto_passwd's file has no %q:\n%s", want, b)
		}
	}
	p, err := LoadPasswords(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 {
		t.Fatalf("got %d users, want 3", p.Len())
	}
	for _, c := range []struct {
		user, password string
		want           bool
	}{
		{"alice", "alice's secret", true},
		{"alice", "alice's secreT", false},
		{"alice", "", false},
		{"bob", "s3cret:with:colons", true},
		{"bob", "s3cret", false},
		{"carol", "ünïcödé", true},
		{"carol", "unicode", false},
		{"dave", "alice's secret", false},
		{"Alice", "alice's secret", false},
	} {
		if got := p.Verify(c.user, []byte(c.password)); got != c.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", c.user, c.password, got, c.want)
		}
	}
	// carol's $6$ is warned about; and alice's 101 iterations when
	// mosquitto_passwd wrote 2.0's default.
	if !strings.Contains(strings.Join(p.Warnings, "\n"), `"carol": $6$`) {
		t.Errorf("no warning for carol's $6$ hash: %q", p.Warnings)
	}
}

// Keel's own $7$, and bcrypt and argon2id hashes made here.
func TestVerifyKeelBcryptArgon2(t *testing.T) {
	h, err := Hash("pässword")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	if len(parts) != 5 || parts[1] != "7" || parts[2] != "210000" {
		t.Fatalf("Hash wrote %q, want $7$210000$SALT$HASH", h)
	}
	if salt, _ := base64.StdEncoding.DecodeString(parts[3]); len(salt) != 12 {
		t.Fatalf("salt is %d bytes, want 12", len(salt))
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("bcrypt pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bcY := "$2y$" + string(bc[4:]) // the PHP/htpasswd spelling of the same hash
	salt := []byte("0123456789abcdef")
	a2 := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", 1024, 2, 1,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(argon2.IDKey([]byte("argon pw"), salt, 2, 1024, 1, 32)))
	file := fmt.Sprintf("# users\n\nkeel:%s\nbc:%s\nbcy:%s\n  a2 :\t%s \r\n", h, bc, bcY, a2)
	p, err := ParsePasswords("test", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, password string
		want           bool
	}{
		{"keel", "pässword", true},
		{"keel", "password", false},
		{"bc", "bcrypt pw", true},
		{"bc", "bcrypt pW", false},
		{"bcy", "bcrypt pw", true},
		{"a2", "argon pw", true},
		{"a2", "argon pW", false},
	} {
		if got := p.Verify(c.user, []byte(c.password)); got != c.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", c.user, c.password, got, c.want)
		}
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings for strong hashes: %q", p.Warnings)
	}
}

// Bad lines are refused at load, with the file, the line and why.
func TestPasswordFileBadLines(t *testing.T) {
	good := "ok:$7$101$KVzVjMvTyZ+rp1/+$81/tfO0Jk+2xPXw9DFfk5H5IetNBbwi6okoeIiBoDB+K6TseAGk2zKRyMxCfkChgS2C5YGdf0LZhGO3d/OLJuA=="
	for _, c := range []struct {
		name, line, reason string
	}{
		{"no colon", "alice", "no ':'"},
		{"no hash", "alice:", "no password hash"},
		{"no user", ":" + good[3:], "empty username"},
		{"plain text", "alice:secret", "not hashed"},
		{"plain text with dollars", "alice:$ecr3t!$pa55", "not hashed"}, // never repeated in the error
		{"unknown type", "alice:$5$abc$def", "unknown hash type $5$"},
		{"bad iterations", "alice:$7$0$KVzVjMvTyZ+rp1/+$81/tfO0Jk+2xPXw9DFfk5H5IetNBbwi6okoeIiBoDB+K6TseAGk2zKRyMxCfkChgS2C5YGdf0LZhGO3d/OLJuA==", "iterations"},
		{"short salt", "alice:$7$101$KVzV$81/tfO0Jk+2xPXw9DFfk5H5IetNBbwi6okoeIiBoDB+K6TseAGk2zKRyMxCfkChgS2C5YGdf0LZhGO3d/OLJuA==", "salt is 3 bytes"},
		{"short hash", "alice:$7$101$KVzVjMvTyZ+rp1/+$81/tfO0J", "hash is"},
		{"bad base64", "alice:$6$!!!!$81/tfO0Jk+2xPXw9DFfk5H5IetNBbwi6okoeIiBoDB+K6TseAGk2zKRyMxCfkChgS2C5YGdf0LZhGO3d/OLJuA==", "not base64"},
		{"missing field", "alice:$7$101$KVzVjMvTyZ+rp1/+", "want $7$ITERATIONS$SALT$HASH"},
		{"bad bcrypt", "alice:$2b$99$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "bcrypt"},
		{"argon2 memory", "alice:$argon2id$v=19$m=99999999,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$MDEyMzQ1Njc4OWFiY2RlZg", "m=99999999"},
		{"argon2i", "alice:$argon2i$v=19$m=1024,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$MDEyMzQ1Njc4OWFiY2RlZg", "unknown hash type"},
		{"duplicate", "ok:" + good[3:], "again (first on line 2)"},
		{"extra colon", good + ":x", "second ':'"},
		{"bad utf8", "al\xffice:" + good[3:], "not valid UTF-8"},
		{"control", "al\x01ice:" + good[3:], "control character"},
		{"huge user", strings.Repeat("u", 70000) + ":" + good[3:], "username longer than 65535"},
		{"huge hash", "alice:$7$101$" + strings.Repeat("A", 70000), "longer than 65535"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := "# comment\n" + good + "\n" + c.line + "\n"
			_, err := ParsePasswords("pw.txt", strings.NewReader(file))
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a *LineError", err)
			}
			if le.File != "pw.txt" || le.Line != 3 || !strings.Contains(le.Reason, c.reason) {
				t.Fatalf("got %q, want pw.txt:3: ...%s...", err, c.reason)
			}
		})
	}
}

// Huge, empty and invalid UTF-8 usernames and passwords at Verify are
// wrong answers, never a panic, and cost a verification (the dummy).
func TestVerifyBadInput(t *testing.T) {
	h, err := hashPBKDF2("pw", 101)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePasswords("t", strings.NewReader("alice:"+h+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := p.dummy.(*pbkdf2Hash); !ok || d.iterations != 101 {
		t.Fatalf("dummy is %#v, want a $7$ hash at the file's 101 iterations", p.dummy)
	}
	for _, c := range []struct{ user, pw string }{
		{"", ""},
		{"alice", strings.Repeat("p", 65535)},
		{strings.Repeat("u", 65535), "pw"},
		{"al\xffice", "pw"},
		{"alice", "p\xffw"},
	} {
		if p.Verify(c.user, []byte(c.pw)) {
			t.Errorf("Verify(%.20q, %.20q) = true, want false", c.user, c.pw)
		}
	}
	if !p.Verify("alice", []byte("pw")) {
		t.Fatal("Verify(alice, pw) = false, want true")
	}
	// HMAC pads a short key with zeros, so "pw\x00" is "pw" to PBKDF2;
	// Mosquitto, reading the password as a C string, stops at the NUL
	// too. The same answer, then.
	if !p.Verify("alice", []byte("pw\x00")) {
		t.Fatal(`Verify(alice, "pw\x00") = false; Mosquitto says true`)
	}
	// An empty file's dummy is $7$ at Keel's own cost.
	empty, err := ParsePasswords("e", strings.NewReader("# nobody\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := empty.dummy.(*pbkdf2Hash); !ok || d.iterations != HashIterations {
		t.Fatalf("empty file's dummy is %#v, want $7$ at %d", empty.dummy, HashIterations)
	}
}

// The real Mosquitto accepts Keel's $7$ hashes: a password file written by
// PasswordFile.Set (210,000 iterations, 12-byte salt) lets alice in with
// her password and keeps her out with another.
func TestMosquittoReadsKeelHashes(t *testing.T) {
	needTools(t, "mosquitto", "mosquitto_pub")
	dir := t.TempDir()
	path := filepath.Join(dir, "pw")
	f := NewPasswordFile(path)
	if err := f.Set("alice", "wonder land"); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	addr := startMosquitto(t, "allow_anonymous false", "password_file "+path)
	if out, err := mosquittoPub(t, addr, "-u", "alice", "-P", "wonder land", "-t", "t", "-m", "x", "-q", "1"); err != nil {
		t.Fatalf("mosquitto refused alice's Keel-hashed password: %v\n%s", err, out)
	}
	if out, err := mosquittoPub(t, addr, "-u", "alice", "-P", "wonderland", "-t", "t", "-m", "x", "-q", "1"); err == nil {
		t.Fatalf("mosquitto let alice in with a wrong password\n%s", out)
	}
	if out, err := mosquittoPub(t, addr, "-t", "t", "-m", "x"); err == nil {
		t.Fatalf("mosquitto let an anonymous client in with allow_anonymous false\n%s", out)
	}
}
