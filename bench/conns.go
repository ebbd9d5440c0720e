package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// The conns scenario (any MQTT broker): N connections that connect, get
// their CONNACK (and, with -subs, their SUBACK) and then say nothing. It
// measures what a fleet of quiet devices costs the broker: resident memory
// per connection (VmRSS of the broker's process after the connections
// minus before, over N), how fast they connect, the broker's CPU while they
// idle, and a keep-alive round (a PINGREQ on every connection, each
// answered).
//
//	go run ./bench conns -addr 127.0.0.1:1883 -pid $(pidof mosquitto) -n 10000
//	go run ./bench conns -addr 127.0.0.1:1883 -pid $(pidof mosquitto) -n 10000 -persistent -subs 10
//
// The clients are bare sockets (no goroutine each): a CONNECT written, a
// CONNACK read, nothing more, so the generator costs the machine little
// beside the broker. They come from -sources local addresses (127.0.0.1,
// 127.0.0.2, ...) so that one machine's ephemeral ports do not run short,
// and they are closed with a reset (SO_LINGER 0), which leaves no TIME_WAIT
// behind to take the next run's ports. The process's open-file limit is
// raised to its hard limit; N beyond it is refused before anything starts.
//
// With -keel, -keel-base or -mosquitto, bench conns runs the scenario
// against each broker instead, interleaved (see connsdrive.go and
// conns.sh).
type connsConfig struct {
	addr        string
	pid         int
	n           int
	version     byte
	keepAlive   uint16
	concurrency int
	persistent  bool
	subs        int // filters in one SUBSCRIBE per connection, 0: none
	sources     int
	settle      time.Duration // after the connects and after the round, before RSS is read
	idle        time.Duration // the idle CPU window
	timeout     time.Duration // one connect's dial + CONNACK (+ SUBACK)
	hold        time.Duration // keep the connections open this long at the end (to profile the broker)
	label       string
	transport   *transport // nil: plain TCP
}

// connsResult is the RESULT line of one conns run. Memory is in KiB ("KB"
// in the report, as /proc says kB).
type connsResult struct {
	Label      string `json:"label,omitempty"`
	Addr       string `json:"addr"`
	Version    int    `json:"v"`
	N          int    `json:"n"`
	Persistent bool   `json:"persistent"`
	Subs       int    `json:"subs"`
	KeepAlive  int    `json:"keep_alive"`
	Sources    int    `json:"sources"`

	RSSBefore  int64   `json:"rss_before_kb"`    // broker VmRSS before the first connect
	RSSAfter   int64   `json:"rss_after_kb"`     // after every CONNACK (SUBACK) and the settle time
	RSSPing    int64   `json:"rss_ping_kb"`      // after the keep-alive round and the settle time
	RSSPeak    int64   `json:"rss_peak_kb"`      // VmHWM at the end
	PerConn    float64 `json:"kb_per_conn"`      // (RSSAfter - RSSBefore) / N
	PerConnPng float64 `json:"kb_per_conn_ping"` // (RSSPing - RSSBefore) / N

	ConnectSeconds float64 `json:"connect_seconds"` // first dial to last CONNACK (SUBACK)
	ConnectRate    float64 `json:"connect_rate"`    // connections per second over that
	ConnectCPU     float64 `json:"connect_cpu_us"`  // broker CPU per connection in that time, µs
	BenchCores     float64 `json:"bench_cores"`     // the generator's CPU in that time, cores

	IdleSeconds float64 `json:"idle_seconds"`
	IdleCores   float64 `json:"idle_cores"` // broker CPU while every connection idles

	PingSeconds float64 `json:"ping_seconds"` // first PINGREQ written to last PINGRESP read
	PingCPU     float64 `json:"ping_cpu_us"`  // broker CPU per PINGREQ in the round, µs
	PingCores   float64 `json:"ping_cores"`

	Err string `json:"error,omitempty"`
}

// connsMain is bench conns: one run against -addr, or the side-by-side
// driver when a broker binary is given.
func connsMain(args []string) int {
	fs := flag.NewFlagSet("bench conns", flag.ExitOnError)
	var cfg connsConfig
	var dc connsDriveConfig
	var version, keepAlive uint
	ns := fs.String("n", "10000", "connections; for the driver a comma-separated list (10000,19000)")
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:1883", "broker `host:port` (one run)")
	fs.IntVar(&cfg.pid, "pid", 0, "broker process id, for its RSS and CPU from /proc (one run; required)")
	fs.UintVar(&version, "v", 4, "MQTT protocol level: 4 (3.1.1) or 5")
	fs.UintVar(&keepAlive, "keepalive", 60, "keep alive in the CONNECT, seconds")
	fs.IntVar(&cfg.concurrency, "concurrency", 64, "connects in flight at once")
	fs.BoolVar(&cfg.persistent, "persistent", false, "persistent sessions (3.1.1 clean session 0; 5.0 session expiry 3600 s)")
	fs.IntVar(&cfg.subs, "subs", 0, "filters each connection subscribes to (QoS 1, in one SUBSCRIBE), after its CONNACK")
	fs.IntVar(&cfg.sources, "sources", 0, "local addresses 127.0.0.1.. to connect from (0: one per 5,000 connections)")
	fs.DurationVar(&cfg.settle, "settle", 5*time.Second, "wait before each RSS reading")
	fs.DurationVar(&cfg.idle, "idle", 5*time.Second, "window in which the broker's idle CPU is measured")
	fs.DurationVar(&cfg.timeout, "connect-timeout", 30*time.Second, "one connection's dial + CONNACK (+ SUBACK)")
	fs.DurationVar(&cfg.hold, "hold", 0, "one run: keep the connections open this long after the last reading (to profile the broker)")
	fs.StringVar(&cfg.label, "label", "", "name of the broker, copied into the RESULT line")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	trKind := fs.String("transport", "tcp", "one run: tcp, tls, ws or wss")
	cafile := fs.String("cafile", "", "one run, with -transport tls or wss: the CA `file` that signed the broker's certificate")
	wsPath := fs.String("ws-path", "/mqtt", "one run, with -transport ws or wss: the HTTP path")
	dc.flags(fs)
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench conns: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if version > 255 || keepAlive > 65535 {
		fmt.Fprintln(os.Stderr, "bench conns: -v or -keepalive out of range")
		return 2
	}
	cfg.version, cfg.keepAlive = byte(version), uint16(keepAlive)
	tr, err := newTransport(*trKind, *cafile, *wsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench conns:", err)
		return 2
	}
	cfg.transport = tr
	list, err := parseCounts(*ns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench conns: -n:", err)
		return 2
	}
	if dc.driving() {
		dc.ns, dc.run = list, cfg
		return dc.main()
	}
	if len(list) != 1 {
		fmt.Fprintln(os.Stderr, "bench conns: one run takes one -n")
		return 2
	}
	cfg.n = list[0]
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench conns:", err)
		return 2
	}
	log := io.Writer(os.Stderr)
	if *quiet {
		log = io.Discard
	}
	r, err := runConns(&cfg, log)
	if r != nil {
		printConns(os.Stdout, r)
		printResult(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench conns:", err)
		return 2
	}
	return 0
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range bytes.Split([]byte(s), []byte{','}) {
		v, err := strconv.Atoi(string(bytes.TrimSpace(f)))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q: want positive counts separated by commas", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func (c *connsConfig) validate() error {
	switch {
	case c.version != packet.V311 && c.version != packet.V5:
		return fmt.Errorf("-v %d: want 4 (3.1.1) or 5", c.version)
	case c.pid <= 0:
		return errors.New("-pid is required: RSS and CPU are the broker process's")
	case c.n < 1 || c.concurrency < 1 || c.subs < 0 || c.sources < 0:
		return errors.New("want -n >= 1, -concurrency >= 1, -subs >= 0, -sources >= 0")
	case c.keepAlive == 0:
		return errors.New("-keepalive 0 turns keep alive off; the round measures it")
	case c.sources > 254:
		return errors.New("-sources: at most 254 (127.0.0.1 to 127.0.0.254)")
	}
	if c.sources == 0 {
		c.sources = (c.n + 4999) / 5000
	}
	return nil
}

func printConns(w io.Writer, r *connsResult) {
	kind := "clean sessions"
	if r.Persistent {
		kind = "persistent sessions"
	}
	fmt.Fprintf(w, "conns: %d idle connections, %s, %d subscriptions each, v%d, keep alive %d s, from %d addresses, against %s %s\n",
		r.N, kind, r.Subs, r.Version, r.KeepAlive, r.Sources, r.Label, r.Addr)
	fmt.Fprintf(w, "  RSS        %d kB before, %d kB after (%.2f kB per connection), %d kB after the keep-alive round (%.2f kB), peak %d kB\n",
		r.RSSBefore, r.RSSAfter, r.PerConn, r.RSSPing, r.PerConnPng, r.RSSPeak)
	fmt.Fprintf(w, "  connect    %.2fs, %.0f connections/s, broker CPU %.1fµs per connection; generator %.2f cores\n",
		r.ConnectSeconds, r.ConnectRate, r.ConnectCPU, r.BenchCores)
	fmt.Fprintf(w, "  idle       broker %.3f cores over %.1fs\n", r.IdleCores, r.IdleSeconds)
	fmt.Fprintf(w, "  keep alive every connection's PINGRESP in %.3fs, broker CPU %.1fµs per PINGREQ (%.2f cores)\n",
		r.PingSeconds, r.PingCPU, r.PingCores)
}

// runConns runs the scenario once. The result carries whatever was
// measured even when err is not nil.
func runConns(cfg *connsConfig, log io.Writer) (*connsResult, error) {
	r := &connsResult{Label: cfg.label, Addr: cfg.addr, Version: int(cfg.version), N: cfg.n,
		Persistent: cfg.persistent, Subs: cfg.subs, KeepAlive: int(cfg.keepAlive), Sources: cfg.sources}
	fail := func(err error) (*connsResult, error) {
		r.Err = err.Error()
		return r, err
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return fail(err)
	}
	if need := uint64(cfg.n) + 64; need > limit {
		return fail(fmt.Errorf("%d connections need about %d open files; this process may have %d (ulimit -Hn)", cfg.n, need, limit))
	}

	time.Sleep(cfg.settle)
	if r.RSSBefore, err = procMemKB(cfg.pid, "VmRSS"); err != nil {
		return fail(err)
	}

	// Connect.
	id := newRunID()
	conns := make([]net.Conn, cfg.n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // a reset: no TIME_WAIT left on this side
				}
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var failed atomic.Int64
	cpu0, err := procCPU(cfg.pid)
	if err != nil {
		return fail(err)
	}
	self0, t0 := selfCPU(), time.Now()
	var wg sync.WaitGroup
	for range min(cfg.concurrency, cfg.n) {
		wg.Go(func() {
			br := bufio.NewReaderSize(nil, 256)
			buf := make([]byte, 0, 512)
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.n {
					return
				}
				c, err := connectIdle(cfg, id, i, br, buf)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu1, _ := procCPU(cfg.pid)
	r.ConnectSeconds = elapsed.Seconds()
	r.ConnectRate = float64(cfg.n) / r.ConnectSeconds
	r.ConnectCPU = float64((cpu1 - cpu0).Microseconds()) / float64(cfg.n)
	r.BenchCores = (selfCPU() - self0).Seconds() / r.ConnectSeconds
	if firstErr != nil {
		return fail(fmt.Errorf("%d of %d connections failed; first: %w", failed.Load(), cfg.n, firstErr))
	}
	fmt.Fprintf(log, "conns: %d connected in %.2fs (%.0f/s)\n", cfg.n, r.ConnectSeconds, r.ConnectRate)

	time.Sleep(cfg.settle)
	if r.RSSAfter, err = procMemKB(cfg.pid, "VmRSS"); err != nil {
		return fail(err)
	}
	r.PerConn = float64(r.RSSAfter-r.RSSBefore) / float64(cfg.n)

	// Idle.
	cpu0, _ = procCPU(cfg.pid)
	t0 = time.Now()
	time.Sleep(cfg.idle)
	cpu1, _ = procCPU(cfg.pid)
	r.IdleSeconds = time.Since(t0).Seconds()
	r.IdleCores = (cpu1 - cpu0).Seconds() / r.IdleSeconds

	// The keep-alive round.
	if err := pingRound(conns, cfg, r); err != nil {
		return fail(err)
	}
	fmt.Fprintf(log, "conns: keep-alive round in %.3fs\n", r.PingSeconds)
	time.Sleep(cfg.settle)
	if r.RSSPing, err = procMemKB(cfg.pid, "VmRSS"); err != nil {
		return fail(err)
	}
	r.PerConnPng = float64(r.RSSPing-r.RSSBefore) / float64(cfg.n)
	r.RSSPeak, _ = procMemKB(cfg.pid, "VmHWM")
	if cfg.hold > 0 {
		fmt.Fprintf(log, "conns: holding %d connections open for %v\n", cfg.n, cfg.hold)
		time.Sleep(cfg.hold)
	}
	return r, nil
}

// connectIdle opens connection i from its source address and completes
// CONNECT/CONNACK and, with subscriptions, SUBSCRIBE/SUBACK. br and buf
// are the worker's, reused.
func connectIdle(cfg *connsConfig, run string, i int, br *bufio.Reader, buf []byte) (net.Conn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%cfg.sources))}
	d := net.Dialer{LocalAddr: src, Timeout: cfg.timeout, Control: bindNoPort}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	c, err := cfg.transport.dial(ctx, &d, cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("dial from %s: %w", src.IP, err)
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(cfg.timeout))
	cp := packet.Connect{ProtocolLevel: cfg.version, KeepAlive: cfg.keepAlive,
		ClientID: fmt.Sprintf("kc-%s-%d", run, i), CleanStart: !cfg.persistent}
	if cfg.persistent && cfg.version == packet.V5 {
		cp.CleanStart = true // a fresh session that outlives the connection
		cp.Props.SessionExpiry = 3600
		cp.Props.Set(packet.PropSessionExpiry)
	}
	if buf, err = cp.Append(buf[:0], cfg.version); err != nil {
		return nil, err
	}
	if cfg.subs > 0 {
		sp := packet.Subscribe{PacketID: 1, Subs: make([]packet.Subscription, cfg.subs)}
		for j := range sp.Subs {
			sp.Subs[j] = packet.Subscription{Filter: fmt.Sprintf("kc/%s/%d/%d", run, i, j), QoS: 1}
		}
		// Written with the CONNECT: a client may send before its CONNACK.
		if buf, err = sp.Append(buf, cfg.version); err != nil {
			return nil, err
		}
	}
	if _, err := c.Write(buf); err != nil {
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	br.Reset(c)
	p, err := packet.Read(br, cfg.version, 0)
	if err != nil {
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	ca, isAck := p.(*packet.Connack)
	switch {
	case !isAck:
		return nil, fmt.Errorf("got %s, want CONNACK", p.Type())
	case ca.ReasonCode != 0:
		return nil, fmt.Errorf("CONNACK refused: %s", ca.ReasonCode)
	}
	if cfg.subs > 0 {
		p, err := packet.Read(br, cfg.version, 0)
		if err != nil {
			return nil, fmt.Errorf("SUBACK: %w", err)
		}
		sa, isAck := p.(*packet.Suback)
		if !isAck || len(sa.Codes) != cfg.subs {
			return nil, fmt.Errorf("got %s, want SUBACK with %d codes", p.Type(), cfg.subs)
		}
		for _, code := range sa.Codes {
			if code >= 0x80 {
				return nil, fmt.Errorf("SUBACK refused a filter: %s", code)
			}
		}
	}
	if br.Buffered() > 0 {
		return nil, fmt.Errorf("%d unexpected bytes after the handshake", br.Buffered())
	}
	c.SetDeadline(time.Time{})
	ok = true
	return c, nil
}

// pingRound sends PINGREQ on every connection and reads every PINGRESP,
// from a few goroutines that each write all of theirs before reading.
func pingRound(conns []net.Conn, cfg *connsConfig, r *connsResult) error {
	const workers = 8
	errs := make([]error, workers)
	cpu0, err := procCPU(cfg.pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	deadline := t0.Add(time.Duration(cfg.keepAlive) * time.Second)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(conns); i += workers {
				conns[i].SetWriteDeadline(deadline)
				if _, err := conns[i].Write([]byte{byte(packet.PINGREQ) << 4, 0}); err != nil {
					errs[w] = fmt.Errorf("PINGREQ on connection %d: %w", i, err)
					return
				}
			}
			var resp [2]byte
			for i := w; i < len(conns); i += workers {
				conns[i].SetReadDeadline(deadline)
				if _, err := io.ReadFull(conns[i], resp[:]); err != nil {
					errs[w] = fmt.Errorf("PINGRESP on connection %d: %w", i, err)
					return
				}
				if resp != [2]byte{byte(packet.PINGRESP) << 4, 0} {
					errs[w] = fmt.Errorf("connection %d: got % x, want PINGRESP", i, resp)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	cpu1, _ := procCPU(cfg.pid)
	r.PingSeconds = el.Seconds()
	r.PingCPU = float64((cpu1 - cpu0).Microseconds()) / float64(len(conns))
	r.PingCores = (cpu1 - cpu0).Seconds() / r.PingSeconds
	return errors.Join(errs...)
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound
// to a source address: the kernel then picks the port at connect, by the
// whole address pair, instead of searching, at bind, for a port no socket
// of that address uses (slow with thousands open, and it would cap each
// address at one connection per port whatever the destination).
func bindNoPort(network, address string, rc syscall.RawConn) error {
	const ipBindAddressNoPort = 24 // linux/in.h
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}

// procMemKB reads one kB field (VmRSS, VmHWM) of /proc/PID/status.
func procMemKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("broker memory: %w", err)
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			f := bytes.Fields(v)
			if len(f) == 2 && string(f[1]) == "kB" {
				return strconv.ParseInt(string(f[0]), 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("broker memory: no %s in /proc/%d/status", field, pid)
}

// raiseFileLimit raises this process's soft open-file limit to the hard
// one and returns it.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("raise the open-file limit to %d: %w", l.Max, err)
		}
	}
	return l.Cur, nil
}
