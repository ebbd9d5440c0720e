package main

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// [quota NAME] sections: keys, patterns, first match wins, errors naming
// the file, the line and the key.
func TestConfigQuotaSections(t *testing.T) {
	p := writeConfig(t, "max_queued_messages = 50\n[quota sensors]\nclientid = sensor-*\nmax_queued_messages = 2\n"+
		"[quota vip]\nusername = vip\nmax_queued_messages = 0\nmax_queued_bytes = 1MiB\n[quota all-sensors]\nclientid = *\nmax_queued_bytes = 5KiB\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if err := c.validateQuotas(); err != nil {
		t.Fatal(err)
	}
	f := c.queueLimits()
	for _, tc := range []struct {
		id, user    string
		msgs, bytes int64
		ok          bool
	}{
		{"sensor-1", "", 2, 0, true},
		{"sensor-1", "vip", 2, 0, true}, // the first section that matches
		{"phone", "vip", -1, 1 << 20, true},
		{"phone", "", 0, 5 << 10, true}, // an anonymous client matches no username
		{"sensor", "bob", 0, 5 << 10, true},
	} {
		m, b, ok := f(tc.id, tc.user)
		if m != tc.msgs || b != tc.bytes || ok != tc.ok {
			t.Errorf("limits(%q, %q) = %d, %d, %v; want %d, %d, %v", tc.id, tc.user, m, b, ok, tc.msgs, tc.bytes, tc.ok)
		}
	}
	eff := c.effective()
	for _, want := range []string{"[quota sensors]\n# username: any\nclientid = sensor-*\nmax_queued_messages = 2\n# max_queued_bytes: the top level's\n",
		"[quota vip]\nusername = vip\n# clientid: any\nmax_queued_messages = 0\nmax_queued_bytes = 1MiB\n"} {
		if !strings.Contains(eff, want) {
			t.Errorf("effective configuration lacks %q:\n%s", want, eff)
		}
	}
	for _, tc := range []struct{ text, want string }{
		{"[quota a]\nclientid = x\nmax_queued_messages = many\n", `:3: key "max_queued_messages" of [quota a]: want a number of messages`},
		{"[quota a]\nclientid = x\nmax_queued_bytes = 1XB\n", `:3: key "max_queued_bytes" of [quota a]: want a number of bytes`},
		{"[quota a]\nclientid = x\nclientid = y\n", `:3: key "clientid" of [quota a]: already set at`},
		{"[quota a]\nqueue_full = refuse\n", `:2: key "queue_full" of [quota a]: unknown key`},
		{"[quota a]\nclientid =\n", `:2: key "clientid" of [quota a]: want a name`},
		{"[quota a]\nmax_queued_messages = 1\n", `:1: [quota a]: set username or clientid`},
		{"[quota a]\nusername = u\n", `:1: [quota a]: set max_queued_messages or max_queued_bytes`},
		{"[quota a]\nusername = u\nmax_queued_messages = 1\n[quota a]\n", `:4: quota "a" is already defined at`},
		{"[quota a b]\n", `:1: want a section [quota NAME]`},
	} {
		p := writeConfig(t, tc.text)
		code, out, errOut := runIn("config", "check", p)
		if code != 1 || out != "" || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.text, code, out, errOut, p+tc.want)
		}
	}
	for i, tc := range []struct {
		pattern, s string
		want       bool
	}{{"a*", "a", true}, {"a*", "ab/c", true}, {"*b", "ab", true}, {"*b", "ba", false}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false}, {"ab*ba", "aba", false}, {"x", "x", true}, {"x", "xy", false}, {"*", "", true}} {
		if got := quotaMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("%d: quotaMatch(%q, %q) = %v, want %v", i, tc.pattern, tc.s, got, tc.want)
		}
	}
}

// The overrides with real clients against the keel binary: a client id
// pattern's small quota refuses (0x97) where the default would not, a
// user's unlimited quota accepts past the default, and both hold after a
// restart; draining delivers exactly what was accepted, in order.
func TestQuotaOverridesEndToEnd(t *testing.T) {
	needTools(t, "mosquitto_passwd")
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range []string{"vip", "pub"} {
		args := []string{"passwd", "-b", passwd, u, u + "-pw"}
		if i == 0 {
			args = []string{"passwd", "-c", "-b", passwd, u, u + "-pw"}
		}
		if code, _, errOut := runKeel(t, args...); code != 0 {
			t.Fatalf("keel passwd %s: exit %d: %s", u, code, errOut)
		}
	}
	conf := writeConfig(t, "data = "+filepath.Join(dir, "data")+"\nlisten = 127.0.0.1:0\npassword_file = "+passwd+
		"\nallow_anonymous = true\nmax_queued_messages = 3\nqueue_full = refuse\n"+
		"[quota small]\nclientid = small-*\nmax_queued_messages = 2\n[quota vip]\nusername = vip\nmax_queued_messages = 0\n")
	k := startKeel(t, "serve", "--config", conf)

	subscribe := func(addr string, cp *paho.Connect, topic string) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}
		pc, _, err := dialAuth5(t, addr, cp)
		if err != nil {
			t.Fatalf("connect %s: %v", cp.ClientID, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		_ = pc.Disconnect(&paho.Disconnect{})
	}
	subscribe(k.addr, &paho.Connect{ClientID: "small-1"}, "q/small")
	subscribe(k.addr, &paho.Connect{ClientID: "plain"}, "q/plain")
	subscribe(k.addr, login("vip-phone", "vip", "vip-pw"), "q/vip")

	// publish sends QoS 1 messages until one is refused; it returns how
	// many were accepted (the publisher is disconnected after a refusal).
	publish := func(addr, topic string, n int, from int) int {
		pc, _, err := dialAuth5(t, addr, login("publisher", "pub", "pub-pw"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic + "#" + strconv.Itoa(from+i))})
			cancel()
			if r == nil {
				t.Fatalf("publish %s: %v", topic, err)
			}
			if r.ReasonCode == 0x97 {
				return i
			}
			if r.ReasonCode != 0 {
				t.Fatalf("publish %s: reason %#x", topic, r.ReasonCode)
			}
		}
		_ = pc.Disconnect(&paho.Disconnect{})
		return n
	}
	if got := publish(k.addr, "q/small", 5, 0); got != 2 {
		t.Fatalf("q/small: %d accepted, want 2 (its clientid quota)", got)
	}
	if got := publish(k.addr, "q/plain", 5, 0); got != 3 {
		t.Fatalf("q/plain: %d accepted, want 3 (the default)", got)
	}
	if got := publish(k.addr, "q/vip", 5, 0); got != 5 {
		t.Fatalf("q/vip: %d accepted, want 5 (no limit for the user)", got)
	}

	// After a restart the stored sessions get the same quotas.
	k.stop(t)
	k = startKeel(t, "serve", "--config", conf)
	if got := publish(k.addr, "q/small", 1, 2); got != 0 {
		t.Fatalf("q/small after a restart: %d accepted, want 0 (full at 2)", got)
	}
	if got := publish(k.addr, "q/vip", 2, 5); got != 2 {
		t.Fatalf("q/vip after a restart: %d accepted, want 2", got)
	}

	drain := func(cp *paho.Connect, want ...string) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}
		pc, _, err := dialAuth5(t, k.addr, cp)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if p := pc.next(t); string(p.Payload) != w {
				t.Fatalf("%s: got %q, want %q", cp.ClientID, p.Payload, w)
			}
		}
		select {
		case p := <-pc.msgs:
			t.Fatalf("%s: got %q after everything accepted", cp.ClientID, p.Payload)
		case <-time.After(200 * time.Millisecond):
		}
	}
	drain(&paho.Connect{ClientID: "small-1"}, "q/small#0", "q/small#1")
	drain(login("vip-phone", "vip", "vip-pw"), "q/vip#0", "q/vip#1", "q/vip#2", "q/vip#3", "q/vip#4", "q/vip#5", "q/vip#6")
}

func u32p(v uint32) *uint32 { return &v }
