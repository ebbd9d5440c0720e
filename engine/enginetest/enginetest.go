// Package enginetest starts a real Keel broker for tests of any package:
// the engine on Pebble (on disk, or on Pebble's crash-simulating memory
// filesystem), served by the listener on a free loopback port, as the
// binary wires them. It is to Keel what httptest.NewServer is to net/http.
package enginetest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

// Options configure Start. The zero value is valid: a broker on a fresh
// crashable memory filesystem, with $SYS off.
type Options struct {
	Engine engine.Options
	// FS holds the data directory; nil: vfs.NewCrashableMem(). Use
	// vfs.Default with Dir set to t.TempDir() for a real disk.
	FS  vfs.FS
	Dir string // "": "data"
}

// Broker is a running broker. Its fields change on Restart and Crash.
type Broker struct {
	Addr   string // host:port to dial
	Engine *engine.Broker
	Store  *wal.Log
	FS     vfs.FS

	t    testing.TB
	opts Options
	ln   net.Listener
	srv  *listener.Server
	done chan struct{}
}

// Logger is the tests' logger: silent unless KEEL_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("KEEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start starts a broker; it is stopped when the test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.FS == nil {
		opts.FS = vfs.NewCrashableMem()
	}
	if opts.Dir == "" {
		opts.Dir = "data"
	}
	if opts.Engine.SysInterval == 0 {
		opts.Engine.SysInterval = -1
	}
	b := &Broker{t: t, opts: opts, FS: opts.FS}
	b.start()
	t.Cleanup(b.Stop)
	return b
}

// Handler serves a listener's connections with b, as cmd/keel does.
func Handler(b *engine.Broker) listener.Handler {
	return listener.HandlerFunc(func(nc net.Conn, info listener.Info) { b.ServeConn(nc, engine.ConnInfo(info)) })
}

func (b *Broker) start() {
	b.t.Helper()
	logger := Logger()
	l, err := wal.Open(wal.Options{Dir: b.opts.Dir, FS: b.FS, Logger: logger})
	if err != nil {
		b.t.Fatalf("wal.Open: %v", err)
	}
	eo := b.opts.Engine
	eo.Logger = logger
	e, err := engine.New(eo, l)
	if err != nil {
		l.Close()
		b.t.Fatalf("engine.New: %v", err)
	}
	// A new free port each start: clients dial Addr.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		l.Close()
		b.t.Fatalf("listen: %v", err)
	}
	b.Addr, b.Engine, b.Store, b.ln = ln.Addr().String(), e, l, ln
	b.srv = &listener.Server{Name: "test", Handler: Handler(e), Logger: logger}
	b.done = make(chan struct{})
	go func() { b.srv.Serve(ln); close(b.done) }()
}

// Stop shuts the broker down cleanly. A second Stop does nothing.
func (b *Broker) Stop() {
	if b.Engine == nil {
		return
	}
	b.ln.Close()
	b.Engine.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	b.srv.Shutdown(ctx)
	cancel()
	<-b.done
	b.Store.Close()
	b.Engine = nil
}

// Restart stops the broker cleanly and starts it on the same data.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// Crash cuts the power: only what was synced survives (plus, with keep >
// 0, that percentage of the unsynced writes, chosen by seed), and the
// broker restarts on it. It needs the crashable memory filesystem.
func (b *Broker) Crash(keep int, seed uint64) {
	b.t.Helper()
	mem, ok := b.FS.(*vfs.MemFS)
	if !ok {
		b.t.Fatalf("Crash needs a vfs.MemFS, have %T", b.FS)
	}
	cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: keep}
	if keep > 0 {
		cfg.RNG = newRand(seed)
	}
	img := mem.CrashClone(cfg)
	// The old broker goes without a clean stop mattering: the image is
	// already taken.
	b.Stop()
	b.FS = img
	b.start()
}
