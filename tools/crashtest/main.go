// Command crashtest checks Keel's promise end to end: it runs publishers and
// subscribers with persistent sessions against a real broker process,
// kill -9s the broker at random moments, restarts it on the same data
// directory, and checks at the end that every acknowledged message arrived
// (exactly once at QoS 2, at least once at QoS 1), in order per publisher,
// with no session lost.
//
//	go run ./tools/crashtest -mode online -qos 2 -crashes 20
//	go run ./tools/crashtest -mosquitto -crashes 5   # must report losses
//	go run ./tools/crashtest -auth -mode offline -qos 2 -crashes 30   # with a password file and an ACL
//	go run ./tools/crashtest -mode dedup -crashes 60   # retrying QoS 1 producers, keel's dedup window on
//
// It prints one summary line
//
//	mode=online qos=2 v=4 [auth=1] [window=10m0s] crashes=N accepted=N delivered=N lost=N duplicated=N reordered=N sessions_lost=N
//
// and exits 1 on any violation (lost > 0, duplicated > 0 at QoS 2 or in
// the dedup mode, where it counts retries routed again: see dedup.go;
// reordered > 0, sessions_lost > 0, or a problem such as the broker dying
// by itself), 2 if the test could not run.
//
// What the broker must do for the tester to pass:
//
//   - start as `keel serve --listen 127.0.0.1:PORT --data DIR` (DIR exists
//     and is empty at the first start, and is the same on every restart;
//     with -auth also `--password-file FILE --acl-file FILE`, and refuse
//     an anonymous client, checked once at the start);
//     the tester knows it is up when the port accepts a TCP connection
//     (probe connections close without sending CONNECT), and retries
//     CONNECT with backoff until it gets a CONNACK;
//   - keep every promise of DESIGN.md across SIGKILL at any moment,
//     including during startup and replay: session present = 1 for every
//     session it had acknowledged; every acknowledged PUBLISH delivered to
//     every persistent subscription (QoS 2: once), in order per
//     publisher; retained values as new as the last acknowledged one;
//     stored wills published after the restart, with no client returning.
//
// The kill is SIGKILL sent to the PID of the process the tester started
// (through os.Process, which cannot hit a reused PID), never by name.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	var cfg Config
	var crashes, qos, version int
	var mosquitto bool
	var brokerCmd, level string
	flag.StringVar(&cfg.Mode, "mode", ModeOnline, "mode: "+strings.Join(modes, ", "))
	flag.IntVar(&crashes, "crashes", 20, "kills in all, including the final one after publishers finish; 0: none")
	flag.DurationVar(&cfg.Duration, "duration", 60*time.Second, "upper bound on the crash phase")
	flag.IntVar(&cfg.Publishers, "publishers", 2, "publishers (online, offline, replay-crash)")
	flag.IntVar(&cfg.Subscribers, "subscribers", 2, "subscribers (online, offline, replay-crash)")
	flag.IntVar(&qos, "qos", 1, "QoS of publications and subscriptions: 1 or 2")
	flag.IntVar(&version, "v", 0, "MQTT protocol version: 4 (3.1.1) or 5 (default 4; dedup: 5)")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "random seed (0: from the clock); printed with the result")
	flag.Float64Var(&cfg.Rate, "rate", 0, "messages per second per publisher (0: the mode's default; -1: as fast as the window allows)")
	flag.IntVar(&cfg.Window, "window", 32, "QoS 1/2 messages in flight per publisher")
	flag.IntVar(&cfg.PayloadSize, "size", 0, "payload bytes (minimum 18)")
	flag.IntVar(&cfg.Sessions, "sessions", 10000, "many-sessions: persistent sessions")
	flag.IntVar(&cfg.PerSession, "per-session", 3, "many-sessions: messages per session")
	flag.IntVar(&cfg.Topics, "topics", 20, "retain-will: retained topics")
	flag.IntVar(&cfg.Wills, "wills", 3, "retain-will: clients with a will")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "hard bound on the whole run")
	flag.DurationVar(&cfg.DrainTimeout, "drain", 60*time.Second, "bound on the final drain")
	flag.StringVar(&cfg.KeelPath, "keel", "", "keel binary (default: build ./cmd/keel into the work dir)")
	flag.BoolVar(&cfg.TLS, "tls", false, "serve the broker's listener over TLS with a certificate made for the run, every client over TLS (see tls.go)")
	flag.BoolVar(&cfg.WebSocket, "ws", false, "serve MQTT over WebSocket, every client over it (with -tls: wss; see tls.go)")
	flag.DurationVar(&cfg.DedupWindow, "dedup-window", 0, "dedup: keel's dedup_window (default 10m; negative: off, which must report duplicates; see dedup.go)")
	flag.BoolVar(&cfg.Auth, "auth", false, "run the broker with a password file and an ACL file, every client logged in (see auth.go)")
	flag.BoolVar(&mosquitto, "mosquitto", false, "test mosquitto without persistence instead (it must fail)")
	flag.StringVar(&brokerCmd, "broker-cmd", "", "test this broker command instead; {addr} {port} {data} {work} {passwd} {acl} are replaced")
	flag.StringVar(&cfg.DataDir, "data", "", "broker data directory (default: a fresh one in the work dir)")
	flag.StringVar(&cfg.WorkDir, "work", "", "work directory for the data dir, the broker log and the build (default: a temporary one)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temporary work directory")
	flag.StringVar(&level, "log", "info", "log level: debug, info, warn, error")
	flag.Parse()

	cfg.Crashes = crashes
	if crashes == 0 {
		cfg.Crashes = -1
	}
	cfg.QoS, cfg.Version = byte(qos), byte(version)
	switch {
	case mosquitto && brokerCmd != "":
		fatal("-mosquitto and -broker-cmd exclude each other")
	case mosquitto:
		cfg.Broker = BrokerMosquitto
	case brokerCmd != "":
		cfg.Broker, cfg.BrokerCmd = BrokerCmd, strings.Fields(brokerCmd)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		fatal("-log: %v", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := Run(ctx, cfg)
	stop()
	if err != nil {
		fatal("%v", err)
	}
	os.Exit(report(res))
}

// report prints the details and the summary line and returns the exit
// code.
func report(res Result) int {
	kinds := slices.Sorted(maps.Keys(res.Kills))
	var kills []string
	for _, k := range kinds {
		kills = append(kills, fmt.Sprintf("%s=%d", k, res.Kills[k]))
	}
	fmt.Printf("seed=%d kills: %s\n", res.Seed, strings.Join(kills, " "))
	for _, k := range slices.Sorted(maps.Keys(res.Details)) {
		fmt.Printf("detail %s=%d\n", k, res.Details[k])
	}
	for _, k := range slices.Sorted(maps.Keys(res.Anomalies)) {
		fmt.Printf("anomaly %s=%d\n", k, res.Anomalies[k])
	}
	for _, e := range res.Examples {
		fmt.Println("example:", e)
	}
	if res.WorkDir != "" {
		fmt.Printf("work dir (broker.log, data): %s\n", res.WorkDir)
	}
	v := res.Violations()
	for _, x := range v {
		fmt.Println("VIOLATION:", x)
	}
	fmt.Println(res.Summary())
	if len(v) > 0 {
		return 1
	}
	return 0
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "crashtest: "+format+"\n", args...)
	os.Exit(2)
}
