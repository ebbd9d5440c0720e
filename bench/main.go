// Command bench is Keel's load generator: it drives any MQTT broker (3.1.1
// or 5.0) with publishers and subscribers and reports throughput, latency,
// loss and CPU, so that Keel and Mosquitto can be measured side by side.
//
// One load run:
//
//	go run ./bench -addr 127.0.0.1:1883 -v 5 -pub 4 -sub 1 -qos 1 -size 64 \
//	    -window 64 -persistent -pattern fanin -duration 10s -pid $(pidof mosquitto)
//
// Patterns: fanin and fanout put every publisher and subscriber on one topic
// (fan-in is many publishers to few subscribers, fan-out the reverse);
// pairs gives publisher i and subscriber i a topic of their own (-sub is
// then -pub). -window is the number of unacknowledged QoS 1/2 publishes per
// publisher (1: synchronous), capped by the server's Receive Maximum; at
// QoS 0 publishers write as fast as TCP takes it. -count is messages per
// publisher; otherwise publishers run for -duration after -warmup.
//
// It prints a summary and one machine-readable line, "RESULT {json}". The
// exit status is 1 when a QoS 1/2 message was acknowledged and never
// delivered (or a QoS 2 message was delivered twice), 2 on any other error.
//
// Other modes:
//
//	go run ./bench -fsync-probe DIR      # 64-byte write + fdatasync latency (and CPU) in DIR
//	go run ./bench matrix -h             # Keel vs Mosquitto, every scenario (see matrix.sh)
//	go run ./bench burst -h              # clean-session reconnects over stored sessions beside a sync publisher (any broker)
//	go run ./bench expiry -h             # a mass session expiry after a crash beside 4 sync publishers (keel only)
//	go run ./bench seams -h              # both, keel before/after and Mosquitto, interleaved (see seams.sh)
//	go run ./bench connects -h           # logins at an offered rate: CONNACKs/s, latency, broker CPU (any broker)
//	go run ./bench auth -h               # fan-in with a 1,000-rule ACL and passwords, and a connect storm: keel vs Mosquitto (see auth.sh)
//	go run ./bench conns -h              # N idle connections: RSS per connection, connect rate, keep-alive round (see conns.sh)
//	go run ./bench transports -h         # fan-in, sync and 10,000 connections over TLS and WebSocket: keel vs Mosquitto (see transports.sh)
//	go run ./bench floor -h              # the least a durable broker can do for a sync QoS 1 publish (see floor.go)
//	go run ./bench bridge -h             # edge -> bridge -> central fan-in QoS 1: keel to keel vs Mosquitto to Mosquitto (see bridge.sh)
//	go run ./bench dedup -h              # fan-in QoS 1 with message ids, keel's dedup window on and off (see dedup.sh)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "matrix" {
		os.Exit(matrixMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "burst" {
		os.Exit(burstMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "expiry" {
		os.Exit(expiryMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "seams" {
		os.Exit(seamsMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "auth" {
		os.Exit(authMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "connects" {
		os.Exit(connectsMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "conns" {
		os.Exit(connsMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "transports" {
		os.Exit(transportsMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "bridge" {
		os.Exit(bridgeMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "dedup" {
		os.Exit(dedupMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		os.Exit(floorMain(os.Args[2:]))
	}
	os.Exit(loadMain(os.Args[1:]))
}

func loadMain(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var cfg config
	var version, qos uint
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:1883", "broker `host:port`")
	fs.UintVar(&version, "v", 5, "MQTT protocol level: 4 (3.1.1) or 5")
	fs.IntVar(&cfg.pubs, "pub", 1, "publishers")
	fs.IntVar(&cfg.subs, "sub", 1, "subscribers (pairs: equal to -pub)")
	fs.UintVar(&qos, "qos", 1, "QoS of publishes and subscriptions: 0, 1 or 2")
	fs.IntVar(&cfg.size, "size", 64, "payload `bytes` (at least 16)")
	fs.IntVar(&cfg.window, "window", 1, "unacknowledged publishes per publisher; 1 = synchronous")
	fs.BoolVar(&cfg.persistent, "persistent", false, "persistent sessions (3.1.1 clean session 0; 5.0 session expiry 3600 s)")
	fs.StringVar(&cfg.pattern, "pattern", "fanin", "fanin, fanout (one shared topic) or pairs (a topic per publisher/subscriber pair)")
	fs.IntVar(&cfg.topicLen, "topic-len", 0, "pad each topic name to this many `bytes` (at least 32; 0: as short as it comes)")
	subAliases := fs.Uint("sub-aliases", 0, "5.0 subscribers' Topic Alias Maximum: how many topic aliases the broker may assign them (3.1.1: none)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured publishing time (after -warmup); ignored with -count")
	fs.DurationVar(&cfg.warmup, "warmup", 0, "publishing time before measurement starts (counts for loss, not for rates)")
	fs.Int64Var(&cfg.count, "count", 0, "messages per publisher (instead of -duration)")
	fs.IntVar(&cfg.pid, "pid", 0, "broker process id, for its CPU time from /proc")
	fs.StringVar(&cfg.label, "label", "", "name of the broker, copied into the RESULT line")
	fs.DurationVar(&cfg.drain, "drain", 3*time.Second, "after publishing, stop waiting for owed deliveries when none came for this long")
	fs.DurationVar(&cfg.ackTimeout, "ack-timeout", 10*time.Second, "after publishing, how long to wait for outstanding acknowledgements")
	fs.BoolVar(&cfg.quiet, "q", false, "no progress lines on stderr")
	fs.StringVar(&cfg.user, "username", "", "log in as this user (every client)")
	fs.StringVar(&cfg.pass, "password", "", "with -username: its password")
	fs.StringVar(&cfg.subUser, "sub-username", "", "subscribers log in as this user instead of -username")
	fs.StringVar(&cfg.subPass, "sub-password", "", "with -sub-username: its password")
	trKind := fs.String("transport", "tcp", "tcp, tls, ws (MQTT over WebSocket) or wss")
	cafile := fs.String("cafile", "", "with -transport tls or wss: the CA `file` that signed the broker's certificate")
	wsPath := fs.String("ws-path", "/mqtt", "with -transport ws or wss: the HTTP path")
	fs.StringVar(&cfg.subAddr, "sub-addr", "", "subscribers connect to this `host:port` instead of -addr (a bridged broker; see bench bridge)")
	fs.StringVar(&cfg.msgID, "msg-id", "", "5.0: put a unique message id in this user `property` of every publish (keel's dedup window: msg-id)")
	cpuprofile := fs.String("cpuprofile", "", "write the generator's CPU profile to `file`")
	probe := fs.String("fsync-probe", "", "only measure 64-byte write + fdatasync latency in `dir`")
	paced := fs.Bool("fsync-paced", false, "with -fsync-probe: also time the prealloc write + fdatasync after a 150 µs idle pause each")
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	if *probe != "" {
		r, err := fsyncProbe(*probe, time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		fmt.Printf("fsync probe in %s: 64 B write + fdatasync, %d samples\n", r.Dir, r.Samples)
		fmt.Printf("  append  p50 %s  p99 %s\n", fmtUS(r.AppendP50), fmtUS(r.AppendP99))
		fmt.Printf("  rewrite p50 %s  p99 %s\n", fmtUS(r.RewriteP50), fmtUS(r.RewriteP99))
		fmt.Printf("  prealloc p50 %s  p99 %s  (append into fallocate(KEEP_SIZE) space, as Pebble's WAL)\n", fmtUS(r.PreallocP50), fmtUS(r.PreallocP99))
		fmt.Printf("  CPU charged to the syncing thread: %.0fµs per write + fdatasync (%.0f%% of its wall time)\n", r.CPUPerSync, 100*r.CPUShare)
		if *paced {
			if r.PacedP50, r.PacedPauseP50, err = fsyncPaced(*probe, 150*time.Microsecond, time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				return 2
			}
			fmt.Printf("  paced   p50 %s  (prealloc, each after an idle pause of %s)\n", fmtUS(r.PacedP50), fmtUS(r.PacedPauseP50))
		}
		printResult(os.Stdout, r)
		return 0
	}

	if version > 255 || qos > 255 || *subAliases > 65535 {
		fmt.Fprintln(os.Stderr, "bench: -v, -qos or -sub-aliases out of range")
		return 2
	}
	cfg.version, cfg.qos, cfg.subAliases = byte(version), byte(qos), uint16(*subAliases)
	tr, err := newTransport(*trKind, *cafile, *wsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	cfg.transport = tr
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	r, err := runLoad(&cfg, os.Stderr)
	if r != nil {
		printSummary(os.Stdout, &cfg, r)
		printResult(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if r.failed() {
		fmt.Fprintf(os.Stderr, "bench: LOSS: %d acknowledged messages never delivered, %d duplicates at QoS %d\n", r.Lost, r.Dups, r.QoS)
		return 1
	}
	return 0
}

func printResult(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "RESULT %s\n", b)
}

func printSummary(w io.Writer, cfg *config, r *result) {
	pers := ""
	if r.Persistent {
		pers = " persistent"
	}
	shape := fmt.Sprintf("%d→%d", r.Pubs, r.Subs)
	if r.Pattern == "pairs" {
		shape = fmt.Sprintf("%d pairs", r.Pubs)
	}
	fmt.Fprintf(w, "%s %s qos%d %dB v%d window %d%s, %.1fs measured, against %s %s\n",
		r.Pattern, shape, r.QoS, r.Size, r.Version, r.Window, pers, r.Seconds, r.Label, r.Addr)
	fmt.Fprintf(w, "  published  %d sent, %d acknowledged (%.0f msg/s), %d rejected, %d bogus acks\n",
		r.Sent, r.Acked, r.PubRate, r.Rejected, r.Bogus)
	fmt.Fprintf(w, "  delivered  %d of %d owed (%.0f msg/s); lost %d, duplicates %d, reordered %d, foreign %d\n",
		r.Delivered, r.Expected, r.DelRate, r.Lost, r.Dups, r.Reordered, r.Bad)
	fmt.Fprintf(w, "  end-to-end p50 %s  p99 %s  p99.9 %s\n", fmtUS(r.E2EP50), fmtUS(r.E2EP99), fmtUS(r.E2EP999))
	if r.SubBytes > 0 {
		fmt.Fprintf(w, "  subscribers read %d bytes, %.1f per delivery (topic %d bytes, Topic Alias Maximum %d)\n",
			r.SubBytes, r.SubBytesPerMsg, r.TopicLen, r.SubAliases)
	}
	switch r.QoS {
	case 1:
		fmt.Fprintf(w, "  PUBACK     p50 %s  p99 %s  mean %s\n", fmtUS(r.AckP50), fmtUS(r.AckP99), fmtUS(r.AckMean))
	case 2:
		fmt.Fprintf(w, "  PUBREC     p50 %s  p99 %s  mean %s\n", fmtUS(r.AckP50), fmtUS(r.AckP99), fmtUS(r.AckMean))
		fmt.Fprintf(w, "  PUBCOMP    p50 %s  p99 %s\n", fmtUS(r.DoneP50), fmtUS(r.DoneP99))
	}
	if cfg.pid > 0 {
		fmt.Fprintf(w, "  broker CPU %.2fs (%.2f cores), %.2fµs per delivered message\n", r.BrokerCPU, r.BrokerCores, r.BrokerCPUPerMsg)
		fmt.Fprintf(w, "  others     %.2f cores (the rest of the machine's busy time: other processes, steal)\n", r.OtherCores)
	}
	fmt.Fprintf(w, "  bench CPU  %.2fs (%.2f cores)\n", r.BenchCPU, r.BenchCores)
	if r.BenchCores > 1.2 {
		fmt.Fprintf(w, "  note: the generator used %.2f of the machine's cores; it may be the bottleneck\n", r.BenchCores)
	}
}

// fmtUS formats microseconds for people.
func fmtUS(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.2fs", us/1e6)
	}
}
