package main

import (
	"os"
	"strings"
	"testing"
)

// The ACL of bench auth has aclRules rules, and the benchmark's users are
// granted their topics by the last lines of their lists.
func TestACLText(t *testing.T) {
	text, n := aclText()
	rules, users := 0, map[string][]string{}
	user := ""
	for _, l := range strings.Split(text, "\n") {
		switch f := strings.Fields(l); {
		case len(f) == 0 || strings.HasPrefix(l, "#"):
		case f[0] == "user":
			user = f[1]
		case f[0] == "pattern": // every user's, wherever it stands
			rules++
		case f[0] == "topic":
			rules++
			users[user] = append(users[user], l)
		default:
			t.Fatalf("unexpected line %q", l)
		}
	}
	if rules != aclRules || n != aclRules {
		t.Fatalf("got %d rules (aclText says %d), want %d", rules, n, aclRules)
	}
	for u, access := range map[string]string{authPubUser: "write", authSubUser: "read"} {
		ls := users[u]
		want := []string{"topic " + access + " bench/+/t", "topic " + access + " bench/+/p/+"}
		if len(ls) < 2 || ls[len(ls)-2] != want[0] || ls[len(ls)-1] != want[1] {
			t.Errorf("%s's last rules are %q, want %q", u, ls[max(0, len(ls)-2):], want)
		}
	}
}

// -into puts the section before "## Details" the first time and replaces
// it, between its markers, afterwards.
func TestSpliceSection(t *testing.T) {
	path := t.TempDir() + "/B.md"
	if err := os.WriteFile(path, []byte("# B\n\n## Summary\n\nx\n\n## Details\n\ny\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{"## Auth\n\nfirst\n", "## Auth\n\nsecond\n"} {
		if err := spliceSection(path, []byte(sec)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# B\n\n## Summary\n\nx\n\n" + authBegin + "\n## Auth\n\nsecond\n" + authEnd + "\n\n## Details\n\ny\n"
	if string(b) != want {
		t.Errorf("got\n%s\nwant\n%s", b, want)
	}
}
