package engine

import (
	"log/slog"
	"sync"
	"time"
)

// connLogPerSecond bounds the connect and disconnect lines logged per
// second: under a connection storm the log says how many it left out
// instead of growing without bound.
const connLogPerSecond = 50

// connLogger rate-limits connection lines. Safe for concurrent use: the
// connections' own goroutines log through it, never the core.
type connLogger struct {
	mu         sync.Mutex
	second     time.Time // start of the current one-second window
	n          int       // lines logged in it
	suppressed int       // lines left out since the last one logged
}

// log writes msg at info level unless the rate is exceeded; the first line
// after a suppression says how many were left out.
func (l *connLogger) log(logger *slog.Logger, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.second) >= time.Second {
		l.second, l.n = now, 0
	}
	if l.n >= connLogPerSecond {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.n++
	left := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if left > 0 {
		args = append(args, "suppressed_before", left)
	}
	logger.Info(msg, args...)
}

// setEndReason records why the connection ends; the first reason given
// wins (a takeover or a slow-consumer cut comes before the read error it
// causes).
func (c *conn) setEndReason(why string) {
	c.endReason.CompareAndSwap(nil, &why)
}

func (c *conn) endReasonOr(def string) string {
	if p := c.endReason.Load(); p != nil {
		return *p
	}
	return def
}
