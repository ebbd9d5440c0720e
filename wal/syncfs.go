package wal

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// SyncBuckets are the upper bounds of Stats.SyncLatency's buckets: from
// 50us (a fast NVMe fdatasync) to 1s (a disk that is failing or saturated).
var SyncBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second,
}

// Histogram is a latency histogram of plain counts over fixed buckets.
type Histogram struct {
	// Bounds are the buckets' upper bounds (inclusive), ascending:
	// SyncBuckets. Shared: do not modify.
	Bounds []time.Duration
	// Counts[i] is the number of samples in (Bounds[i-1], Bounds[i]];
	// Counts[len(Bounds)] those above the last bound. Not cumulative.
	Counts []uint64
	Sum    time.Duration // of every sample
}

// Count is the number of samples.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// syncStats counts the syncs of Pebble's WAL files and their latency.
type syncStats struct {
	counts [len(SyncBuckets) + 1]atomic.Uint64
	sumNs  atomic.Int64
}

func (s *syncStats) observe(d time.Duration) {
	i := 0
	for i < len(SyncBuckets) && d > SyncBuckets[i] {
		i++
	}
	s.counts[i].Add(1)
	s.sumNs.Add(int64(d))
}

// histogram reads the counters. Each is read atomically; a sync that ends
// meanwhile may be in Counts and not yet in Sum, which a scrape tolerates.
func (s *syncStats) histogram() Histogram {
	h := Histogram{Bounds: SyncBuckets[:], Counts: make([]uint64, len(s.counts))}
	for i := range s.counts {
		h.Counts[i] = s.counts[i].Load()
	}
	h.Sum = time.Duration(s.sumNs.Load())
	return h
}

// syncFS wraps the filesystem Pebble is given so that every Sync, SyncData
// and SyncTo of a WAL file (a name ending in ".log" in the data directory)
// is counted and timed. A checkpoint's copies of the WAL, written through
// the same FS into another directory, are not the WAL's syncs.
// It is how Stats.Syncs counts the WAL's fdatasyncs without reading
// Pebble's Prometheus-typed metrics.
type syncFS struct {
	vfs.FS
	dir   string // the data directory, as PathDir returns it
	stats *syncStats
}

func (fs syncFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") || fs.FS.PathDir(name) != fs.dir {
		return f, err
	}
	return syncFile{File: f, stats: fs.stats}, nil
}

func (fs syncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs syncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

func (fs syncFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

type syncFile struct {
	vfs.File
	stats *syncStats
}

func (f syncFile) Sync() error {
	t := time.Now()
	err := f.File.Sync()
	f.stats.observe(time.Since(t))
	return err
}

func (f syncFile) SyncData() error {
	t := time.Now()
	err := f.File.SyncData()
	f.stats.observe(time.Since(t))
	return err
}

func (f syncFile) SyncTo(length int64) (fullSync bool, err error) {
	t := time.Now()
	fullSync, err = f.File.SyncTo(length)
	f.stats.observe(time.Since(t))
	return fullSync, err
}
