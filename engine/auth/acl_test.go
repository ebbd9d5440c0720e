package auth

import (
	"errors"
	"strings"
	"testing"
)

func mustACL(t testing.TB, file string) *ACL {
	t.Helper()
	a, err := ParseACL("acl", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func user(name string) Identity { return Identity{Username: name} }

var anonymous = Identity{Anonymous: true}

type allowCase struct {
	id     Identity
	cid    string
	topic  string
	access Access
	want   bool
}

func checkAllow(t *testing.T, a *ACL, cases []allowCase) {
	t.Helper()
	for _, c := range cases {
		if got := a.Allow(c.id, c.cid, c.topic, c.access); got != c.want {
			t.Errorf("Allow(%.30v, %.20q, %.20q, %v) = %v, want %v", c.id, c.cid, c.topic, c.access, got, c.want)
		}
	}
}

// Mosquitto's syntax, quirks included: "topic X" is readwrite on X, so
// "topic read" alone is readwrite on the topic "read"; the filter is the
// rest of the line, spaces and all; trailing white space and CRLF are
// dropped; leading spaces are skipped; a section for the same user twice
// is one list.
func TestACLSyntax(t *testing.T) {
	a := mustACL(t, strings.Join([]string{
		"# comment",
		"",
		"   ",
		"topic read",
		"  topic write  a b/c  \t",
		"topic x/y\r",
		"user alice",
		"topic read alice/1",
		"user  bob smith ",
		"topic write bob/#",
		"user alice",
		"topic write alice/2",
		"pattern %%c/%c/%u/%x",
	}, "\n"))
	checkAllow(t, a, []allowCase{
		{anonymous, "c", "read", Read, true},
		{anonymous, "c", "read", Write, true},
		{anonymous, "c", "a b/c", Write, true},
		{anonymous, "c", "a b/c", Read, false},
		{anonymous, "c", "x/y", Write, true},
		{user("alice"), "c", "alice/1", Read, true},
		{user("alice"), "c", "alice/2", Write, true},
		{user("alice"), "c", "alice/2", Read, false},
		{user("alice"), "c", "x/y", Read, false}, // anonymous lines are not alice's
		{user("bob smith"), "c", "bob/x/y", Write, true},
		{user("bob"), "c", "bob/x", Write, false},
		{user("u"), "cid", "%cid/cid/u/%x", Read, true}, // "%%c": a literal '%' then %c
		{anonymous, "cid", "%cid/cid//%x", Read, false}, // %u: skipped for anonymous
	})
	if len(a.Warnings) != 0 {
		t.Errorf("warnings: %q", a.Warnings)
	}
	w := mustACL(t, "pattern read fixed/topic\n")
	if len(w.Warnings) != 1 || !strings.Contains(w.Warnings[0], "acl:1: pattern \"fixed/topic\" has no %c or %u") {
		t.Errorf("warnings for a pattern without %%c or %%u: %q", w.Warnings)
	}
}

// An unparsable line or unknown keyword is refused with file, line and
// reason. badACLLines is shared with the test that shows Mosquitto
// refuses the same lines.
var badACLLines = []struct{ name, line, reason string }{
	{"unknown keyword", "topix read a", `unknown keyword "topix"`},
	{"capitalised", "Topic read a", `unknown keyword "Topic"`},
	{"bad access", "topic reed a/b", `access "reed"`},
	{"tab", "topic\tread a", "not tabs"},
	{"no topic", "topic", `"topic" without a topic`},
	{"no user", "user", `"user" without a username`},
	{"bad filter", "topic read a/#/b", `topic filter "a/#/b"`},
	{"bad plus", "pattern read a+/b", `topic filter "a+/b"`},
	{"leading comment", "  # indented comment", `unknown keyword "#"`},
}

func TestACLBadLines(t *testing.T) {
	for _, c := range append(badACLLines, struct{ name, line, reason string }{
		"bad utf8", "topic read a/\xff", "not valid UTF-8",
	}) {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseACL("acl.conf", strings.NewReader("# ok\ntopic read ok\n"+c.line+"\n"))
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a *LineError", err)
			}
			if le.File != "acl.conf" || le.Line != 3 || !strings.Contains(le.Reason, c.reason) {
				t.Fatalf("got %q, want acl.conf:3: ...%s...", err, c.reason)
			}
		})
	}
}

// Meaning beyond the side-by-side table: the $ rules, no file section
// means denied, huge and strange identities.
func TestACLSemantics(t *testing.T) {
	a := mustACL(t, strings.Join([]string{
		"topic readwrite #",
		"topic readwrite +/#",
		"topic read $SYS/#",
		"topic readwrite $SYS/#",
		"topic readwrite $share/#",
		"topic readwrite $app/#",
		"user u",
		"topic read +",
		"pattern read p/%u/%c",
	}, "\n"))
	checkAllow(t, a, []allowCase{
		{anonymous, "c", "a/b", Write, true},
		{anonymous, "c", "$SYS/x", Read, true},      // only by the "$SYS/#" line
		{anonymous, "c", "$SYS/x", Write, false},    // never, whatever the file
		{anonymous, "c", "$share/g/t", Read, false}, // never
		{anonymous, "c", "$app/x", Write, true},     // another $ topic: as the file says
		{user("u"), "c", "$SYS", Read, false},       // '+' does not match a $ topic
		{user("u"), "c", "x", Read, true},
		{user("u"), "c", "x", Write, false},
		{user("u"), "c", "p/u/c", Read, true},
		{user("u"), "a/b", "p/u/a/b", Read, false}, // Keel: a '/' in %c grants nothing
		{user("u/x"), "c", "p/u/x/c", Read, false}, // nor in %u
		{user("u"), "c", "p/u/c", Access(8), false},
		{user(strings.Repeat("u", 65535)), strings.Repeat("c", 65535), "p", Read, false},
		{user("\xff"), "\xfe", "p/\xff/\xfe", Read, true}, // bytes are bytes: the decoder refuses bad UTF-8 first
		{anonymous, "c", "anything", Subscribe, true},     // as Mosquitto 2.0
	})
	empty := mustACL(t, "# nothing\n")
	if empty.Allow(anonymous, "c", "a", Read) || empty.Allow(user("u"), "c", "a", Write) {
		t.Error("an empty ACL file allowed something; Mosquitto denies everything")
	}
	// Deny patterns still match an expansion with '/': the change only
	// ever denies.
	d := mustACL(t, "pattern read #\npattern deny x/%c\n")
	if d.Allow(anonymous, "a/b", "x/a/b", Read) {
		t.Errorf("deny pattern x/%%c did not deny x/a/b to client a/b")
	}
	if !d.Allow(anonymous, "a/b", "y", Read) {
		t.Error("pattern read # did not allow y")
	}
}
