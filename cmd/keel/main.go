// Command keel runs the Keel MQTT broker.
//
//	keel                      # keel serve with the defaults (127.0.0.1:1883, ./keel-data)
//	keel serve --listen 127.0.0.1:1883 --data ./keel-data
//	keel serve --config keel.conf
//	keel config check keel.conf
//	keel version
//
// Exit status: 0 on success, 1 when keel fails (at start or later), 2 for
// a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/wal"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usageText = `Keel is an MQTT broker whose acknowledgements mean the state is on disk.

Usage:
  keel [serve] [flags]       run the broker (the default command)
  keel config check FILE     check a config file and say what is wrong in it
  keel passwd FILE USER      add or change a user in a Mosquitto-format password file (-b, -c, -D, -U: see keel passwd -h)
  keel version               print the version, commit, Go and Pebble versions, data format
  keel inspect DATA [VIEW]   look inside a stopped broker's data directory (--admin: a running one)
  keel backup DATA DEST      copy a data directory consistently (--admin: while the broker serves)
  keel restore BACKUP DATA   check a backup and make it a new data directory
  keel help                  print this help

Run 'keel serve --help' for the flags of serve.
`

// run is keel's command line; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return serveCmd(nil, stdout, stderr)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	case "version", "-version", "--version":
		if len(rest) > 0 {
			return usageError(stderr, fmt.Sprintf("version: unexpected argument %q", rest[0]))
		}
		fmt.Fprint(stdout, versionText())
		return 0
	case "config":
		return configCmd(rest, stdout, stderr)
	case "passwd":
		return passwdCmd(rest, os.Stdin, stdout, stderr)
	case "serve":
		return serveCmd(rest, stdout, stderr)
	case "inspect", "backup", "restore":
		return opsCmd(cmd, rest, stdout, stderr) // ops.go
	default:
		if strings.HasPrefix(cmd, "-") {
			return serveCmd(args, stdout, stderr) // keel --listen ... is keel serve --listen ...
		}
		return usageError(stderr, fmt.Sprintf("unknown command %q", cmd))
	}
}

// usageError reports a usage error with the usage, and returns 2.
func usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "keel: %s\n\n%s", msg, usageText)
	return 2
}

// serveFlags are serve's flags; each sets the config key of its name (with
// '-' for '_'), over the config file.
func serveFlags(cfg config) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("keel serve", flag.ContinueOnError)
	fs.Usage = func() {} // serveCmd prints the usage where it belongs
	configPath := fs.String("config", "", "config `FILE` (key = value lines; flags override it)")
	fs.String("listen", cfg.Default.Listen, "MQTT listen `HOST:PORT` (0.0.0.0:1883 for every interface, with --allow-anonymous)")
	fs.Bool("allow-anonymous", false, "let clients without a username in (the default only on a loopback --listen without --password-file)")
	fs.String("password-file", "", "Mosquitto-format password `FILE` (keel passwd makes one): clients must log in")
	fs.String("acl-file", "", "Mosquitto-format ACL `FILE`: what each user may publish and read")
	fs.String("data", cfg.Data, "data directory `DIR` (created if missing; must be empty or Keel's)")
	fs.String("admin", "", "serve the admin listener (/healthz, /readyz, /metrics, /api/) on `HOST:PORT` (e.g. 127.0.0.1:9183)")
	fs.String("metrics", "", "the old name of --admin")
	fs.Bool("pprof", false, "also serve /debug/pprof/ on the admin address")
	fs.String("log-level", strings.ToLower(cfg.LogLevel.String()), "log `LEVEL`: debug, info, warn or error")
	fs.String("log-format", "text", "log `FORMAT`: text (logfmt) or json (one object a line)")
	fs.String("min-free-disk", "default", "refuse new QoS 1/2 publishes and persistent sessions below `FREE` on the data directory's filesystem: bytes (16MiB, 500MB), a percentage (5%), 0 (off), or default (5% or 1GiB, whichever is smaller)")
	return fs, configPath
}

func serveUsage(w io.Writer) {
	fs, _ := serveFlags(defaultConfig())
	fs.SetOutput(w)
	fmt.Fprintln(w, "Usage: keel serve [flags]")
	fmt.Fprintln(w)
	fs.PrintDefaults()
}

func serveCmd(args []string, stdout, stderr io.Writer) int {
	cfg := defaultConfig()
	fs, configPath := serveFlags(cfg)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			serveUsage(stdout)
			return 0
		}
		fmt.Fprintln(stderr)
		serveUsage(stderr)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keel serve: unexpected argument %q (serve takes only flags)\n\n", fs.Arg(0))
		serveUsage(stderr)
		return 2
	}
	var set [][2]string // the flags given, applied over the file at every (re)load
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "config" {
			set = append(set, [2]string{f.Name, f.Value.String()})
		}
	})
	load := func() (config, error) { return loadConfig(*configPath, set) }
	cfg, err := load()
	if err == nil {
		err = serve(cfg, load, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "keel:", err)
		return 1
	}
	return 0
}

// loadConfig is the configuration from the file at path (none if "")
// with the flags in set over it, validated.
func loadConfig(path string, set [][2]string) (config, error) {
	cfg := defaultConfig()
	if path != "" {
		if err := cfg.load(path); err != nil {
			return cfg, err
		}
	}
	for _, f := range set {
		if err := cfg.set(strings.ReplaceAll(f[0], "-", "_"), f[1], "flag --"+f[0]); err != nil {
			return cfg, fmt.Errorf("flag --%s: %w", f[0], err)
		}
	}
	return cfg, cfg.validate()
}

// serve runs the broker on cfg until a signal or a failure; reload
// rereads the configuration for SIGHUP.
func serve(cfg config, reload func() (config, error), stderr io.Writer) error {
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	if cfg.LogJSON {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	}
	logger := slog.New(handler)

	t0 := time.Now()
	// Caught from the start: a signal during replay is handled (a clean
	// stop; SIGHUP: a reload of the listeners' certificates) once serving, and none arrives between the "listening" line
	// and the handler.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	// The admin address is bound first, so an address that cannot be
	// served (one the operator asked for) fails the start at once, before
	// replay; /healthz answers from then on (admin.go).
	var admin *adminServer
	if addr := cfg.adminAddr(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("admin listener %s: %w", addr, err)
		}
		token, err := cfg.adminToken()
		if err != nil {
			ln.Close()
			return err
		}
		admin = startAdmin(ln, cfg.Pprof, token, logger)
		defer admin.shutdown(context.Background()) // a no-op after the one below
		logger.Info("admin listening", "addr", admin.addr, "pprof", cfg.Pprof)
	}
	logger.Info("configuration", cfg.summary()...) // startlog.go
	l, err := wal.Open(wal.Options{Dir: cfg.Data, Logger: logger, CompressThreshold: cfg.CompressThreshold})
	if err != nil {
		return err
	}
	disk, err := startDiskWatcher(cfg.Data, cfg.Disk, l.Reclaim, logger) // disk.go
	switch {
	case errors.Is(err, errNoStatfs) && !cfg.Disk.on():
		logger.Warn("min_free_disk: free disk space is not measured on this platform: no low-water mark", "err", err)
	case err != nil:
		l.Close()
		return err
	default:
		defer disk.close()
		cfg.Engine.Disk = disk
	}
	limiter := auth.NewLimiter(auth.LimiterOptions{Concurrent: cfg.MaxVerifications})
	authn := &brokerAuth{limiter: limiter}
	st, err := loadAuth(&cfg, limiter, logger)
	if err != nil {
		l.Close()
		return err
	}
	authn.cur.Store(st)
	acl := auth.NewLive(st.acl)
	logAuth(logger, "authentication", &cfg, st)
	cfg.Engine.Logger = logger
	cfg.Engine.Version = buildVersion()
	cfg.Engine.Authenticator = bridgeAuthn{authn}
	cfg.Engine.Authorizer = acl
	cfg.Engine.SessionOwners = sessionOwners(&cfg)
	cfg.Engine.QueueLimits = cfg.queueLimits() // quotasection.go
	b, err := engine.New(cfg.Engine, l)
	if err != nil {
		l.Close()
		return err
	}
	bridges, err := startBridges(&cfg, b, logger)
	if err != nil {
		b.Close()
		l.Close()
		return err
	}
	servers, err := startListeners(cfg, b, logger)
	if err != nil {
		stopBridges(bridges)
		b.Close()
		l.Close()
		return err
	}
	if admin != nil {
		admin.ready(b, l, servers, bridges...)
	}
	logger.Info("keel listening", "addr", servers[0].addr, "data", cfg.Data, "version", buildVersion(),
		"startup", time.Since(t0).Round(time.Millisecond))
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.srv.Serve(s.ln) }()
	}

	var failure error
serving:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				reloadAll(reload, &cfg, authn, acl, b, servers, logger)
				continue
			}
			logger.Info("shutting down", "signal", s.String())
		case err := <-errc:
			logger.Error("listener failed", "err", err)
			failure = err
		case <-b.Failed():
			// The store failed (I/O error, disk full): nothing more can be
			// acknowledged. Stop cleanly; the next start replays the last
			// synced state.
			failure = fmt.Errorf("store failed: %w", b.Err())
			logger.Error("shutting down: store failed", "err", b.Err())
		}
		break serving
	}
	// Stop accepting, disconnect clients, let in-flight commits finish,
	// close Pebble.
	if admin != nil {
		admin.stop() // /readyz: 503 from now on
	}
	for _, s := range servers {
		s.ln.Close()
	}
	stopBridges(bridges)
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logger.Warn("shutdown", "listener", s.srv.Name, "err", err)
		}
	}
	if admin != nil {
		admin.shutdown(ctx)
	}
	if disk != nil {
		disk.close() // before the store: a reclaim uses it
	}
	if err := l.Close(); err != nil && failure == nil {
		return fmt.Errorf("closing store: %w", err)
	}
	logger.Info("stopped")
	return failure
}
