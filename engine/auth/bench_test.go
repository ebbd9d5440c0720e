package auth

import (
	"fmt"
	"strings"
	"testing"
)

// acl1000 is an ACL of 1,000 rules: 10 users with 90 topic lines each, and
// 100 patterns.
func acl1000(b *testing.B) *ACL {
	var f strings.Builder
	for u := range 10 {
		fmt.Fprintf(&f, "user u%d\n", u)
		for i := range 90 {
			fmt.Fprintf(&f, "topic readwrite site/%d/dev/%d/+\n", u, i)
		}
	}
	for i := range 100 {
		fmt.Fprintf(&f, "pattern read p/%d/%%u/%%c/#\n", i)
	}
	a, err := ParseACL("bench", strings.NewReader(f.String()))
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkACL: one PUBLISH's Write decision against 1,000 rules, without
// and with the connection's Cache. The topic is allowed by the user's
// last-but-one line and the patterns are walked only when the user's lines
// do not decide (patterns=walked: a topic only a pattern allows).
func BenchmarkACL(b *testing.B) {
	a := acl1000(b)
	id := user("u3")
	for _, c := range []struct{ name, topic string }{
		{"patterns=skipped", "site/3/dev/88/temp"},
		{"patterns=walked", "p/99/u3/c/x"},
	} {
		access := Write
		if strings.HasPrefix(c.topic, "p/") {
			access = Read
		}
		if !a.Allow(id, "c", c.topic, access) {
			b.Fatalf("%s not allowed", c.topic)
		}
		b.Run("cache=off/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Allow(id, "c", c.topic, access)
			}
		})
		b.Run("cache=on/"+c.name, func(b *testing.B) {
			cache := NewCache(NewLive(a), id, "c", 0)
			b.ReportAllocs()
			for b.Loop() {
				cache.Allow(c.topic, access)
			}
		})
	}
}

// BenchmarkVerify: one CONNECT's password verification, $7$ at Keel's
// (and Mosquitto 2.1's) 210,000 iterations and at Mosquitto 2.0's 101.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{HashIterations, 101} {
		b.Run(fmt.Sprintf("hash=$7$/iterations=%d", n), func(b *testing.B) {
			h, err := hashPBKDF2("secret", n)
			if err != nil {
				b.Fatal(err)
			}
			p, err := ParsePasswords("b", strings.NewReader("u:"+h+"\n"))
			if err != nil {
				b.Fatal(err)
			}
			pw := []byte("secret")
			b.ReportAllocs()
			for b.Loop() {
				if !p.Verify("u", pw) {
					b.Fatal("Verify = false")
				}
			}
		})
	}
}
