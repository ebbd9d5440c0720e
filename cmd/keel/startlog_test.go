package main

import (
	"path/filepath"
	"regexp"
	"testing"
)

// keel serve logs the effective configuration once at start, defaults
// included, and every line of a connection names its client id, listener
// and remote address.
func TestStartupLogsConfigurationAndConnectionsTheirListener(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	conf := writeConfig(t, "data = "+data+"\nlisten = 127.0.0.1:0\nmax_inflight = 7\n")
	k := startKeel(t, "serve", "--config", conf)
	c := pahoClient(t, k.addr, "who", true)
	c.Disconnect(100)
	k.waitLog(t, `msg="client disconnected"`)
	k.stop(t)
	log := k.stderr()
	for _, re := range []string{
		`msg=configuration data=` + regexp.QuoteMeta(data) + ` .*\bmax_packet_size=268435455 .*\bmax_inflight=7 .*listeners="\[default=127\.0\.0\.1:0\]"`,
		`msg="client connected" remote=127\.0\.0\.1:\d+ listener=default client=who `,
		`msg="client disconnected" remote=127\.0\.0\.1:\d+ listener=default client=who reason=`,
	} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("keel's log has no line matching %s:\n%s", re, log)
		}
	}
}
