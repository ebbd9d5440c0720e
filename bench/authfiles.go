package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The files of bench auth: one password file and one ACL file, read by
// keel and Mosquitto alike.
//
// The ACL has aclRules rules, Mosquitto's syntax:
//
//	2 topic lines for anonymous clients (before any "user"; the
//	  benchmark's clients all log in)
//	18 users dev00..dev17 with 45 topic lines each (810)
//	benchpub and benchsub, the benchmark's publishers and subscribers,
//	  44 lines each: a deny, 41 lines that do not match the benchmark's
//	  topics, and last the two grants it needs (write or read on
//	  bench/+/t and bench/+/p/+, the load generator's topics)
//	100 patterns over %u and %c (readwrite, read, write and deny), none
//	  of which matches the benchmark's topics
//
// The grants come last in their user's list on purpose: a broker that
// walks the rules for every message pays the whole walk.
//
// The password file holds the 20 users, each with a random password,
// written by `keel passwd -b` ($7$, PBKDF2-SHA512 at 210,000 iterations),
// which Mosquitto 2.0 reads too.
const (
	aclRules      = 1000
	authPubUser   = "benchpub"
	authSubUser   = "benchsub"
	decoyUsers    = 18
	linesPerDecoy = 45
	benchUserRule = 44
	aclPatterns   = 100
)

// authFiles are the files and the benchmark users' credentials.
type authFiles struct {
	passwd, acl      string
	pubPass, subPass string
	rules            int
}

// aclText is the ACL file described above, and its number of rules.
func aclText() (string, int) {
	var b strings.Builder
	rules := 0
	rule := func(format string, a ...any) {
		fmt.Fprintf(&b, format+"\n", a...)
		rules++
	}
	b.WriteString("# keel bench auth: a 1,000-rule ACL (bench/authfiles.go)\n\n# anonymous clients\n")
	rule("topic read public/status")
	rule("topic read public/announcements/#")
	for u := range decoyUsers {
		fmt.Fprintf(&b, "\nuser dev%02d\n", u)
		for i := range linesPerDecoy {
			switch i % 5 {
			case 0:
				rule("topic readwrite site/%02d/line/%d/+/telemetry", u, i)
			case 1:
				rule("topic read site/%02d/cmd/%d/#", u, i)
			case 2:
				rule("topic write site/%02d/ack/%d", u, i)
			case 3:
				rule("topic deny site/%02d/line/%d/secret", u, i)
			default:
				rule("topic readwrite site/%02d/+/%d/state", u, i)
			}
		}
	}
	for _, u := range []struct{ name, access string }{{authPubUser, "write"}, {authSubUser, "read"}} {
		fmt.Fprintf(&b, "\nuser %s\n", u.name)
		rule("topic deny bench/+/secret")
		for i := range benchUserRule - 3 {
			switch i % 3 {
			case 0:
				rule("topic %s plant/%d/+/line/#", u.access, i)
			case 1:
				rule("topic readwrite lab/%s/%d/+", u.name, i)
			default:
				rule("topic %s bench-old/%d/t", u.access, i)
			}
		}
		rule("topic %s bench/+/t", u.access)
		rule("topic %s bench/+/p/+", u.access)
	}
	b.WriteString("\n# patterns: every user\n")
	for i := range aclPatterns {
		switch i % 4 {
		case 0:
			rule("pattern readwrite devices/%%c/%d/#", i)
		case 1:
			rule("pattern read fleet/%%u/cmd/%d", i)
		case 2:
			rule("pattern write fleet/%%u/telemetry/%d/+", i)
		default:
			rule("pattern deny fleet/%%u/private/%d/#", i)
		}
	}
	return b.String(), rules
}

// writeAuthFiles writes the ACL and, with keel's `keel passwd -b`, the
// password file into dir.
func writeAuthFiles(keel, dir string) (*authFiles, error) {
	acl, rules := aclText()
	f := &authFiles{passwd: filepath.Join(dir, "passwd"), acl: filepath.Join(dir, "acl"), rules: rules}
	if err := os.WriteFile(f.acl, []byte(acl), 0o644); err != nil {
		return nil, err
	}
	users := []string{authPubUser, authSubUser}
	for u := range decoyUsers {
		users = append(users, fmt.Sprintf("dev%02d", u))
	}
	for i, u := range users {
		var pw [12]byte
		rand.Read(pw[:])
		pass := hex.EncodeToString(pw[:])
		switch u {
		case authPubUser:
			f.pubPass = pass
		case authSubUser:
			f.subPass = pass
		}
		args := []string{"passwd", "-b", f.passwd, u, pass}
		if i == 0 {
			args = []string{"passwd", "-c", "-b", f.passwd, u, pass}
		}
		if out, err := exec.Command(keel, args...).CombinedOutput(); err != nil {
			// The output never holds the password: keel passwd does not
			// echo it.
			return nil, fmt.Errorf("keel passwd -b %s %s: %v: %s", f.passwd, u, err, strings.TrimSpace(string(out)))
		}
	}
	return f, nil
}
