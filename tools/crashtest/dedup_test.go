package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDedupCrash runs the dedup mode (dedup.go) against keel: with the
// window on, every acknowledged message arrives and no retry is routed
// again, at QoS 1 and 2, across kill -9s; with the window off, the same
// producers' retries must show up as duplicates, or the tester could not
// see what it claims to rule out. It always runs keel: the window is
// Keel's, whatever KEEL_CRASHTEST_BROKER says.
func TestDedupCrash(t *testing.T) {
	bin := builtKeel(t)
	for i, tc := range []struct {
		name    string
		qos     byte
		window  time.Duration
		wantDup bool
	}{
		{"qos1", 1, 0, false},
		{"qos2", 2, 0, false},
		{"qos1/window-off", 1, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				Mode: ModeDedup, QoS: tc.qos, DedupWindow: tc.window,
				Crashes: 6, Duration: 10 * time.Second, Timeout: 60 * time.Second, DrainTimeout: 20 * time.Second,
				Seed:   uint64(time.Now().UnixNano()) + uint64(i),
				Broker: BrokerKeel, KeelPath: bin, WorkDir: t.TempDir(),
				Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			}
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			for _, e := range res.Examples {
				t.Log("example:", e)
			}
			if res.Crashes == 0 {
				t.Errorf("no crash happened")
			}
			if res.Accepted == 0 {
				t.Fatalf("accepted=0: nothing was published, so the run proves nothing")
			}
			if res.Details["resent_acked"]+res.Details["retried_connected"] == 0 {
				t.Errorf("no retry of an acknowledged or in-flight message was sent: details %v", res.Details)
			}
			v := res.Violations()
			if !tc.wantDup {
				if len(v) > 0 {
					t.Errorf("seed %d: violations: %s", res.Seed, strings.Join(v, "; "))
					b := &broker{logPath: filepath.Join(cfg.WorkDir, "broker.log")}
					t.Logf("broker log tail:\n%s", b.logTail(4096))
				}
				return
			}
			if res.Duplicated == 0 {
				t.Errorf("seed %d: the window is off and %d retries were sent, yet no duplicate was counted",
					res.Seed, res.Details["resent_acked"]+res.Details["retried_connected"])
			}
			if res.Lost > 0 || res.Reordered > 0 || res.SessionsLost > 0 || len(res.Problems) > 0 {
				t.Errorf("seed %d: window off: only duplicates were expected: %s", res.Seed, strings.Join(v, "; "))
			}
		})
	}
}
