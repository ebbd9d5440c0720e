package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine"
)

// The disk low-water mark, min_free_disk (README "Limits and quotas").
// The watcher lives here, not in the engine: it is I/O (statfs) on a
// goroutine of its own, and only cmd/keel knows the data directory, the
// configuration and the process's lifetime. The engine sees an
// engine.DiskMonitor whose Usage reads the last measurement from an atomic
// pointer: the core never waits on a system call for it (engine/disk.go).

// diskMark is min_free_disk: a number of bytes or a percentage of the
// filesystem's size.
type diskMark struct {
	Set     bool    // false: the default, min(5% of the filesystem, 1 GiB)
	Bytes   int64   // when Percent is 0; 0: off
	Percent float64 // of the filesystem's size, 0 < Percent < 100
}

// decimalUnits are the SI units min_free_disk also takes ("500MB").
var decimalUnits = []struct {
	name string
	n    int64
}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}}

// parseDiskMark reads min_free_disk: "default" (5% of the filesystem or
// 1 GiB, whichever is smaller), "0" (off), a number of bytes with an
// optional unit ("16MiB", "1GiB", "500MB"), or a percentage ("5%").
func parseDiskMark(v string) (diskMark, error) {
	s := strings.TrimSpace(v)
	if s == "default" {
		return diskMark{}, nil
	}
	bad := fmt.Errorf("want bytes with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB) like 1GiB or 500MB, a percentage of the filesystem like 5%%, 0 (off) or default, got %q", v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(f > 0 && f < 100) {
			return diskMark{}, fmt.Errorf("want a percentage above 0 and below 100, like 5%%, got %q", v)
		}
		return diskMark{Set: true, Percent: f}, nil
	}
	for _, u := range decimalUnits {
		if len(s) > len(u.name) && strings.EqualFold(s[len(s)-len(u.name):], u.name) {
			n, err := strconv.ParseInt(strings.TrimSpace(s[:len(s)-len(u.name)]), 10, 64)
			if err != nil || n < 0 || n > math.MaxInt64/u.n {
				return diskMark{}, bad
			}
			return diskMark{Set: true, Bytes: n * u.n}, nil
		}
	}
	n, err := parseBytes(s)
	if err != nil {
		return diskMark{}, bad
	}
	return diskMark{Set: true, Bytes: n}, nil
}

func (m diskMark) String() string {
	switch {
	case !m.Set:
		return "default"
	case m.Percent > 0:
		return strconv.FormatFloat(m.Percent, 'g', -1, 64) + "%"
	}
	return fmtBytes(m.Bytes)
}

// of is the mark in bytes on a filesystem of total bytes.
func (m diskMark) of(total uint64) uint64 {
	switch {
	case !m.Set:
		return min(total/20, 1<<30)
	case m.Percent > 0:
		return uint64(float64(total) * m.Percent / 100)
	}
	return uint64(m.Bytes)
}

var diskKeys = []key[config]{
	{"min_free_disk", func(c *config, v string) error {
		m, err := parseDiskMark(v)
		c.Disk = m
		return err
	}, func(c *config) string { return c.Disk.String() }},
}

// The watcher's pace: statfs is one cheap system call, so it measures
// often, and more often near the mark, where a fast publisher matters.
const (
	// reclaimEvery is the shortest time between two reclaims while the
	// disk is low; a reclaim also waits ten times as long as the last one
	// took, so it never takes more than a tenth of the disk's time.
	reclaimEvery = 5 * time.Second

	diskEvery     = time.Second
	diskEveryNear = 100 * time.Millisecond // free below twice the mark, or low
	diskLogEvery  = 10 * time.Second       // between two lines of the same kind
)

// errNoStatfs is statfs's error on a platform keel does not measure.
var errNoStatfs = errors.New("measuring free disk space is not supported on this platform")

// diskWatcher measures the filesystem of the data directory on its own
// goroutine and publishes the result for the engine, /metrics, /readyz
// and the console. serve owns it: start, then close.
type diskWatcher struct {
	dir  string
	mark diskMark
	log  *slog.Logger
	cur  atomic.Pointer[engine.DiskUsage]

	// reclaim, if set, gives back the space of deleted keys (wal.Log's
	// Reclaim: a flush); the watcher runs it on its own goroutine while
	// the disk is low: without it, a store that takes few new writes
	// would keep the space of what subscribers drained, and stay low.
	reclaim     func() error
	reclaimWG   sync.WaitGroup
	reclaimOn   atomic.Bool  // one at a time
	reclaimTook atomic.Int64 // the last one's duration, ns
	closeOnce   sync.Once

	stop chan struct{}
	done chan struct{}

	// Owned by the watcher's goroutine (and start, before it runs).
	nextReclaim time.Time
	lastLog     time.Time
	lastErr     time.Time
	flips       int // state changes not logged since the last line
	wasLow      bool
	measured    bool
}

// startDiskWatcher measures dir once (so the broker starts knowing where
// it stands) and then keeps measuring until close.
func startDiskWatcher(dir string, mark diskMark, reclaim func() error, log *slog.Logger) (*diskWatcher, error) {
	w := &diskWatcher{dir: dir, mark: mark, log: log, reclaim: reclaim, stop: make(chan struct{}), done: make(chan struct{})}
	if err := w.measure(time.Now()); err != nil {
		return nil, fmt.Errorf("min_free_disk: %w", err)
	}
	u := w.Usage()
	log.Info("disk", "dir", dir, "free", u.Free, "total", u.Total, "min_free_disk", u.MinFree, "low", u.Low)
	go w.run()
	return w, nil
}

// Usage is the last measurement (engine.DiskMonitor). It does no I/O.
func (w *diskWatcher) Usage() engine.DiskUsage { return *w.cur.Load() }

func (w *diskWatcher) run() {
	defer close(w.done)
	t := time.NewTimer(w.every())
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			if err := w.measure(now); err != nil && now.Sub(w.lastErr) >= diskLogEvery {
				w.lastErr = now
				w.log.Error("min_free_disk: measuring the data directory's filesystem; keeping the last measurement", "dir", w.dir, "err", err)
			}
			if w.Usage().Low {
				w.maybeReclaim(now)
			}
			t.Reset(w.every())
		}
	}
}

func (w *diskWatcher) every() time.Duration {
	u := w.Usage()
	if u.Low || u.Free < 2*u.MinFree {
		return diskEveryNear
	}
	return diskEvery
}

// measure takes one measurement, publishes it, and logs a change of
// state, at most one line per diskLogEvery (then with the changes left
// out).
func (w *diskWatcher) measure(now time.Time) error {
	free, total, err := statfs(w.dir)
	if err != nil {
		return err
	}
	mark := w.mark.of(total)
	u := &engine.DiskUsage{Free: free, Total: total, MinFree: mark, Low: mark > 0 && free < mark}
	w.cur.Store(u)
	if w.measured && u.Low != w.wasLow {
		w.flips++
		if now.Sub(w.lastLog) >= diskLogEvery {
			args := []any{"dir", w.dir, "free", free, "min_free_disk", mark}
			if w.flips > 1 {
				args = append(args, "changes_since_last_line", w.flips)
			}
			if u.Low {
				w.log.Warn("disk below min_free_disk: refusing new QoS 1/2 publishes and new persistent sessions", args...)
			} else {
				w.log.Info("disk above min_free_disk again: accepting", args...)
			}
			w.lastLog, w.flips = now, 0
		}
	}
	w.wasLow, w.measured = u.Low, true
	return nil
}

// maybeReclaim starts a reclaim unless one runs or the last was too
// recent. Watcher goroutine only.
func (w *diskWatcher) maybeReclaim(now time.Time) {
	if w.reclaim == nil || now.Before(w.nextReclaim) || !w.reclaimOn.CompareAndSwap(false, true) {
		return
	}
	w.nextReclaim = now.Add(max(reclaimEvery, 10*time.Duration(w.reclaimTook.Load())))
	w.reclaimWG.Add(1)
	go func() {
		defer w.reclaimWG.Done()
		defer w.reclaimOn.Store(false)
		t0 := time.Now()
		err := w.reclaim()
		took := time.Since(t0)
		if err != nil {
			w.log.Warn("min_free_disk: reclaiming the space of deleted keys", "err", err, "took", took.Round(time.Millisecond))
			return
		}
		w.log.Info("min_free_disk: flushed the store's memtable, so that compactions give back the space of deleted keys", "took", took.Round(time.Millisecond))
		// Read by the watcher at its next turn; a reclaim running blocks
		// the next, so the write and that read are ordered by reclaimOn.
		w.reclaimTook.Store(int64(took))
	}()
}

// close stops the watcher and waits for its goroutines (a reclaim in
// progress included). serve calls it before closing the store; later
// calls do nothing.
func (w *diskWatcher) close() {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.reclaimWG.Wait()
	})
}

// on reports whether the mark was asked for explicitly (not the default,
// not 0): off Linux, where keel cannot measure, that is a start error.
func (m diskMark) on() bool { return m.Set && (m.Bytes > 0 || m.Percent > 0) }

// diskInfo is the disk's part of /api/stats' broker object.
type diskInfo struct {
	DiskFreeBytes    uint64 `json:"disk_free_bytes"`
	DiskTotalBytes   uint64 `json:"disk_total_bytes"`
	DiskMinFreeBytes uint64 `json:"disk_min_free_bytes"` // min_free_disk; 0: off
	DiskLow          bool   `json:"disk_low"`            // refusing: below min_free_disk
	RetainedBytes    int64  `json:"retained_bytes"`      // what max_retained_bytes bounds
}

func diskInfoOf(s *engine.Stats) diskInfo {
	return diskInfo{DiskFreeBytes: s.DiskFree, DiskTotalBytes: s.DiskTotal, DiskMinFreeBytes: s.DiskMinFree,
		DiskLow: s.DiskLow, RetainedBytes: s.RetainedBytes}
}
