package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/auth"
)

func passwdIn(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := passwdCmd(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func loadPW(t *testing.T, path string) *auth.Passwords {
	t.Helper()
	p, err := auth.LoadPasswords(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPasswdSetDeleteCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pw")
	if code, _, stderr := passwdIn("", "-b", path, "alice", "a-pw"); code != 1 || !strings.Contains(stderr, "does not exist (-c creates it)") {
		t.Fatalf("without -c on a missing file: exit %d, %q", code, stderr)
	}
	if code, _, stderr := passwdIn("", "-c", "-b", path, "alice", "a-pw"); code != 0 {
		t.Fatalf("-c -b: exit %d: %s", code, stderr)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("new file mode %v, want 0600", st.Mode().Perm())
	}
	// The prompt's stand-in: one line of stdin.
	if code, _, stderr := passwdIn("b-pw\n", path, "bob"); code != 0 {
		t.Fatalf("stdin password: exit %d: %s", code, stderr)
	}
	p := loadPW(t, path)
	if !p.Verify("alice", []byte("a-pw")) || !p.Verify("bob", []byte("b-pw")) || p.Len() != 2 {
		t.Fatalf("after setting alice and bob: %d users, alice ok %v, bob ok %v", p.Len(), p.Verify("alice", []byte("a-pw")), p.Verify("bob", []byte("b-pw")))
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "alice:$7$210000$") {
		t.Fatalf("file is %q, want alice's $7$210000$ line first", b)
	}
	// Changing bob keeps alice's line byte for byte.
	aliceLine := strings.SplitN(string(b), "\n", 2)[0]
	if code, _, stderr := passwdIn("", "-b", path, "bob", "new"); code != 0 {
		t.Fatalf("change: exit %d: %s", code, stderr)
	}
	b, _ = os.ReadFile(path)
	if !strings.HasPrefix(string(b), aliceLine+"\n") || !loadPW(t, path).Verify("bob", []byte("new")) {
		t.Fatalf("after changing bob: %q", b)
	}
	if code, _, _ := passwdIn("", "-D", path, "alice"); code != 0 {
		t.Fatal("-D alice failed")
	}
	if p := loadPW(t, path); p.Len() != 1 || p.Verify("alice", []byte("a-pw")) {
		t.Fatal("alice still there after -D")
	}
	if code, _, stderr := passwdIn("", "-D", path, "alice"); code != 1 || !strings.Contains(stderr, `"alice" is not in`) {
		t.Fatalf("-D of a missing user: exit %d, %q", code, stderr)
	}
	// -c replaces the file.
	if code, _, _ := passwdIn("", "-c", "-b", path, "carol", "c"); code != 0 {
		t.Fatal("-c over an existing file failed")
	}
	if p := loadPW(t, path); p.Len() != 1 || !p.Verify("carol", []byte("c")) {
		t.Fatal("-c did not replace the file")
	}
}

func TestPasswdUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pw")
	h, _ := auth.Hash("kept")
	plain := "# plain\nalice:alice pw\n\nbob:" + h + "\n"
	if err := os.WriteFile(path, []byte(plain), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.LoadPasswords(path); err == nil {
		t.Fatal("the broker loaded a plain-text password file")
	}
	code, stdout, stderr := passwdIn("", "-U", path)
	if code != 0 || !strings.Contains(stdout, "hashed 1 ") {
		t.Fatalf("-U: exit %d, %q %q", code, stdout, stderr)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# plain\nalice:$7$") || !strings.HasSuffix(string(b), "\n\nbob:"+h+"\n") {
		t.Fatalf("after -U: %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v after -U, want the file's 0640 kept", st.Mode().Perm())
	}
	p := loadPW(t, path)
	if !p.Verify("alice", []byte("alice pw")) || !p.Verify("bob", []byte("kept")) {
		t.Fatal("after -U the passwords do not verify")
	}
	// Twice does not hash a hash.
	if code, stdout, _ := passwdIn("", "-U", path); code != 0 || !strings.Contains(stdout, "hashed 0 ") {
		t.Fatalf("second -U: exit %d, %q", code, stdout)
	}
}

func TestPasswdUsageAndErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pw")
	os.WriteFile(path, []byte("broken line\n"), 0o600)
	for _, c := range []struct {
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"", nil, 2, "want FILE USER"},
		{"", []string{"-x"}, 2, "flag provided but not defined"},
		{"", []string{"-c", "-D", path, "u"}, 2, "exclude each other"},
		{"", []string{"-b", path, "u"}, 2, "-b takes FILE USER PASSWORD"},
		{"", []string{"-U"}, 2, "-U takes FILE"},
		{"", []string{"-c", "-b", path, "a:b", "p"}, 2, "contains ':'"},
		{"", []string{"-c", "-b", path, strings.Repeat("u", 70000), "p"}, 2, "longer than 65535"},
		{"", []string{"-c", "-b", path, "\xff", "p"}, 2, "not valid UTF-8"},
		{"", []string{"-c", "-b", path, "u", strings.Repeat("p", 70000)}, 1, "password longer than 65535"},
		{"", []string{"-c", path, "u"}, 1, "no password on standard input"},
		{"\n", []string{"-c", path, "u"}, 1, "empty password"},
		{"", []string{"-b", path, "u", "p"}, 1, path + ":1: no ':'"},
		{"", []string{"-D", filepath.Join(dir, "missing"), "u"}, 1, "does not exist"},
	} {
		code, _, stderr := passwdIn(c.stdin, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("keel passwd %.60q: exit %d, stderr %.200q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
		if c.code == 2 && !strings.Contains(stderr, "Usage:") {
			t.Errorf("keel passwd %.60q: usage error without the usage", c.args)
		}
	}
	if code, stdout, _ := passwdIn("", "-h"); code != 0 || !strings.Contains(stdout, "keel passwd -U FILE") {
		t.Errorf("-h: exit %d, %q", code, stdout)
	}
	if b, _ := os.ReadFile(path); string(b) != "broken line\n" {
		t.Errorf("a failed edit changed the file: %q", b)
	}
}

// The file keel passwd writes is one the real mosquitto_passwd edits,
// and one mosquitto_passwd writes is one keel passwd edits.
func TestPasswdWithMosquittoPasswd(t *testing.T) {
	needTools(t, "mosquitto_passwd")
	path := filepath.Join(t.TempDir(), "pw")
	mp := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
		}
	}
	mp("-c", "-b", path, "mosq", "m-pw")
	if code, _, stderr := passwdIn("", "-b", path, "keel", "k-pw"); code != 0 {
		t.Fatalf("keel passwd on mosquitto_passwd's file: exit %d: %s", code, stderr)
	}
	mp("-b", path, "mosq2", "m2-pw")
	p := loadPW(t, path)
	for u, pw := range map[string]string{"mosq": "m-pw", "keel": "k-pw", "mosq2": "m2-pw"} {
		if !p.Verify(u, []byte(pw)) {
			t.Errorf("%s does not verify after both tools edited the file", u)
		}
	}
	mp("-D", path, "keel")
	if loadPW(t, path).Len() != 2 {
		t.Error("mosquitto_passwd -D did not find keel's line")
	}
}
