package wal

import (
	"context"
	"fmt"
	"log/slog"
)

// pebbleLogger routes Pebble's log lines to the Log's slog.Logger.
//
// Pebble calls Fatalf when it cannot go on: a commit error, a failed
// MANIFEST write or sync, an invariant violation. Its default logger then
// calls os.Exit(1). Ours does not exit: it records the message as the Log's
// sticky error (Err) and returns, so the broker stops accepting writes,
// fails every pending Txn, and shuts down in order. Pebble's code after a
// Fatalf is not meant to run, so nothing more is written to Pebble once the
// sticky error is set.
type pebbleLogger struct{ l *Log }

// Infof logs at debug level: Pebble's routine chatter (WAL replay,
// flushes) is not what an operator of the broker needs to see.
func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.logger.Log(context.Background(), slog.LevelDebug, "pebble: "+fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.logger.Log(context.Background(), slog.LevelError, "pebble: "+fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.setErr(fmt.Errorf("wal: pebble fatal error: %s", fmt.Sprintf(format, args...)))
}
