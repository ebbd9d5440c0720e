package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keelmq/keel/engine/auth"
	mqtt "github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// Authentication and ACLs on (Config.Auth, -auth): the broker under test
// runs with a password file and an ACL file, written into the work dir,
// and every client logs in as the user of its role:
//
//	ct-pub   publishers (p): write crash/+ (online, offline, replay-crash),
//	         crash/r/+ (retained values), crash/m/+ (many-sessions)
//	ct-sub   subscribers (s), the will watcher (w), the retained checkers
//	         (k): read crash/+, crash/r/+, crash/will/+
//	ct-will  the clients with a will (l): write crash/will/+
//	ct-many  the many-sessions sessions (m): read crash/m/+
//
// with a deny line and patterns that grant none of the test's topics, and
// no anonymous access. A right missing from the file shows up as loss
// (3.1.1: a publish acknowledged and dropped; a delivery refused), which is
// what the run checks. Sessions are owned by their user, so every
// reconnection after a crash is also the owner check.
//
// Hashes: $7$ at Keel's 210,000 iterations (auth.Hash, what keel passwd
// writes) for every user but ct-many, whose 10,000 sessions reconnect after
// every crash; at ~0.15 s of CPU each that is minutes per crash on two
// cores, so ct-many has Mosquitto 2.0's 101 iterations
// (auth.HashWithIterations), which both brokers accept too.
const (
	authFile = "passwd"
	aclFile  = "acl"
)

// authUsers maps a role (the letter after the prefix in a client id) to
// its user.
var authUsers = map[byte]string{
	'p': "ct-pub",
	's': "ct-sub", 'w': "ct-sub", 'k': "ct-sub",
	'l': "ct-will",
	'm': "ct-many",
}

const crashACL = `# crashtest -auth (tools/crashtest/auth.go): each role's rights, nothing more
user ct-pub
topic deny crash/will/#
topic write crash/+
topic write crash/r/+
topic write crash/m/+

user ct-sub
topic read crash/+
topic read crash/r/+
topic read crash/will/+

user ct-will
topic write crash/will/+

user ct-many
topic read crash/m/+

# every user: none of these grants a topic the test uses
pattern deny crash/%u/#
pattern readwrite crash/c/%c/#
pattern read crash/m/%u
`

// writeAuthFiles writes the password and ACL files into work and returns
// each user's password.
func writeAuthFiles(work string, nonce uint64) (map[string]string, error) {
	passwords := map[string]string{}
	var file strings.Builder
	for _, u := range []string{"ct-pub", "ct-sub", "ct-will", "ct-many"} {
		pw := fmt.Sprintf("%s-%016x", u, nonce)
		h, err := auth.Hash(pw)
		if u == "ct-many" {
			h, err = auth.HashWithIterations(pw, 101)
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&file, "%s:%s\n", u, h)
		passwords[u] = pw
	}
	if err := os.WriteFile(filepath.Join(work, authFile), []byte(file.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(work, aclFile), []byte(crashACL), 0o644); err != nil {
		return nil, err
	}
	return passwords, nil
}

// credentials are the username and password of the client id, or none
// when authentication is off.
func (r *run) credentials(id string) (string, []byte) {
	if r.passwords == nil {
		return "", nil
	}
	rest := strings.TrimPrefix(id, r.prefix+"-")
	if rest == "" || authUsers[rest[0]] == "" {
		panic("crashtest: no user for client id " + id)
	}
	u := authUsers[rest[0]]
	return u, []byte(r.passwords[u])
}

// checkAnonymousRefused connects without a username: the broker must
// refuse it (5.0: 0x87, 3.1.1: return code 5), or authentication is not in
// force and the run proves nothing about it. It asks nothing of the
// password check, so it starts no per-address backoff.
func (r *run) checkAnonymousRefused(ctx context.Context) error {
	c, err := mqtt.Connect(ctx, mqtt.Options{
		Addr: r.addr, Dial: r.dial(), Version: r.cfg.Version, ClientID: r.prefix + "-anonymous", CleanStart: true,
		ConnectTimeout: connectTimeout,
	})
	if err == nil {
		c.Close()
		return errors.New("auth: the broker let an anonymous client in: authentication is not in force")
	}
	var ce *mqtt.ConnectError
	if !errors.As(err, &ce) {
		return fmt.Errorf("auth: anonymous connect: %w", err)
	}
	want := packet.CodeNotAuthorized
	if r.cfg.Version != packet.V5 {
		want = packet.RetNotAuthorized
	}
	if ce.Code != want {
		return fmt.Errorf("auth: anonymous connect refused with %#x, want %#x", byte(ce.Code), byte(want))
	}
	return nil
}
