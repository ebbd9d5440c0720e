// Command keel runs the Keel MQTT broker.
//
//	keel                      # keel serve with the defaults
//	keel serve --listen 127.0.0.1:1883 --data ./keel-data
//	keel serve --config keel.conf
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	} else if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		fmt.Fprintf(os.Stderr, "keel: unknown command %q (want: serve)\n", args[0])
		os.Exit(2)
	}
	if err := serve(args); err != nil {
		fmt.Fprintln(os.Stderr, "keel:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("keel serve", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file (key = value lines; flags override it)")
	listen := fs.String("listen", "", "MQTT listen address (default "+cfg.Listen+")")
	data := fs.String("data", "", "data directory (default "+cfg.Data+")")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9183)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath != "" {
		if err := cfg.load(*configPath); err != nil {
			return err
		}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *data != "" {
		cfg.Data = *data
	}
	if *metrics != "" {
		cfg.Metrics = *metrics
	}
	if *logLevel != "" {
		if err := cfg.set("log_level", *logLevel); err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	t0 := time.Now()
	l, err := wal.Open(wal.Options{Dir: cfg.Data, Logger: logger, CompressThreshold: cfg.CompressThreshold})
	if err != nil {
		return err
	}
	cfg.Engine.Logger = logger
	b, err := engine.New(cfg.Engine, l)
	if err != nil {
		l.Close()
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		b.Close()
		l.Close()
		return err
	}
	logger.Info("keel listening", "addr", ln.Addr().String(), "data", cfg.Data, "startup", time.Since(t0).Round(time.Millisecond))

	if cfg.Metrics != "" {
		go serveMetrics(cfg.Metrics, b, logger)
	}

	srv := &listener.Server{Handler: b, Logger: logger}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var failure error
	select {
	case s := <-sig:
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
	// Stop accepting, disconnect clients, let in-flight commits finish,
	// close Pebble.
	ln.Close()
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("shutdown", "err", err)
	}
	if err := l.Close(); err != nil && failure == nil {
		return fmt.Errorf("closing store: %w", err)
	}
	logger.Info("stopped")
	return failure
}

func serveMetrics(addr string, b *engine.Broker, logger *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(b))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if err := http.ListenAndServe(addr, mux); err != nil {
		logger.Error("metrics listener", "err", err)
	}
}
