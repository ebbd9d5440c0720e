package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// fsyncResult is what one synced 64-byte write costs on a disk: the floor
// under a durable broker's synchronous acknowledgement latency.
type fsyncResult struct {
	Dir        string  `json:"dir"`
	Samples    int     `json:"samples"`
	AppendP50  float64 `json:"append_p50_us"` // write at the end + fdatasync (the file grows)
	AppendP99  float64 `json:"append_p99_us"`
	RewriteP50 float64 `json:"rewrite_p50_us"` // overwrite in place + fdatasync (preallocated log)
	RewriteP99 float64 `json:"rewrite_p99_us"`
	// Prealloc: write at the end of a file preallocated with
	// fallocate(FALLOC_FL_KEEP_SIZE) + fdatasync, which is what Pebble does
	// with a new WAL file (vfs.NewSyncingFile with PreallocateSize): the
	// size still grows, the blocks are already reserved.
	PreallocP50 float64 `json:"prealloc_p50_us"`
	PreallocP99 float64 `json:"prealloc_p99_us"`
	// CPUPerSync is the CPU time (user + system) the kernel charged to the
	// probing thread per write + fdatasync, over all modes; CPUShare is that
	// over the wall time of the write + fdatasync. On a VM whose disk driver
	// polls, a good part of a sync's wait is charged as system time, and a
	// durable broker's CPU per synchronous message includes it.
	CPUPerSync float64 `json:"cpu_per_sync_us"`
	CPUShare   float64 `json:"cpu_share"`

	// Paced (bench -fsync-probe DIR -fsync-paced): the prealloc write +
	// fdatasync, each after an idle pause of PacedPauseP50, as the syncs
	// of a synchronous client come, one per network round trip. On a VM
	// the same sync costs more after an idle pause than back to back.
	PacedP50      float64 `json:"paced_p50_us,omitempty"`
	PacedPauseP50 float64 `json:"paced_pause_p50_us,omitempty"`
}

// fsyncPaced times prealloc writes + fdatasync in dir, each after sleeping
// pause, for at most budget (or 2,000 samples).
func fsyncPaced(dir string, pause, budget time.Duration) (p50, pauseP50 float64, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.CreateTemp(dir, "keel-bench-fsync-*")
	if err != nil {
		return 0, 0, fmt.Errorf("fsync probe: %w", err)
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	_ = syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, 4<<20)
	buf := make([]byte, 64)
	var ds, ps []time.Duration
	start := time.Now()
	for len(ds) < 2000 && (time.Since(start) < budget || len(ds) < 10) {
		t0 := time.Now()
		time.Sleep(pause)
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, 0, fmt.Errorf("fsync probe: %w", err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0, fmt.Errorf("fsync probe: %w", err)
		}
		ds = append(ds, time.Since(t))
		ps = append(ps, t.Sub(t0))
	}
	slices.Sort(ds)
	slices.Sort(ps)
	return float64(ds[len(ds)/2]) / 1e3, float64(ps[len(ps)/2]) / 1e3, nil
}

// wal is the latency to compare a synchronous acknowledgement with: the
// mode Pebble's WAL writes in (prealloc), or append when an older result
// has no prealloc figure.
func (r *fsyncResult) wal() float64 {
	if r.PreallocP50 > 0 {
		return r.PreallocP50
	}
	return r.AppendP50
}

// threadCPU is the CPU time (user + system) of the calling OS thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fsyncProbe times 64-byte writes each followed by fdatasync in scratch
// files under dir, for at most budget per mode (or 2,000 samples).
func fsyncProbe(dir string, budget time.Duration) (*fsyncResult, error) {
	// One thread for the whole probe, so that RUSAGE_THREAD covers it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	buf := make([]byte, 64)
	for i := range buf {
		buf[i] = byte(i)
	}
	var cpu, wall time.Duration
	time1 := func(f *os.File, write func() error) (p50, p99 float64, n int, err error) {
		var ds []time.Duration
		start := time.Now()
		c0 := threadCPU()
		for len(ds) < 2000 && (time.Since(start) < budget || len(ds) < 10) {
			t := time.Now()
			if err := write(); err != nil {
				return 0, 0, 0, err
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				return 0, 0, 0, err
			}
			d := time.Since(t)
			ds = append(ds, d)
			wall += d
		}
		cpu += threadCPU() - c0
		slices.Sort(ds)
		q := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / 1e3 }
		return q(0.5), q(0.99), len(ds), nil
	}
	create := func() (*os.File, func(), error) {
		f, err := os.CreateTemp(dir, "keel-bench-fsync-*")
		if err != nil {
			return nil, nil, fmt.Errorf("fsync probe: %w", err)
		}
		return f, func() { f.Close(); os.Remove(f.Name()) }, nil
	}

	f, done, err := create()
	if err != nil {
		return nil, err
	}
	defer done()
	r := &fsyncResult{Dir: dir}
	var n1, n2, n3 int
	r.AppendP50, r.AppendP99, n1, err = time1(f, func() error { _, err := f.Write(buf); return err })
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	// Rewrite the blocks the append pass allocated, as a recycled log does.
	var off int64
	size := int64(n1) * int64(len(buf))
	r.RewriteP50, r.RewriteP99, n2, err = time1(f, func() error {
		_, err := f.WriteAt(buf, off)
		off = (off + int64(len(buf))) % size
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}

	// Append into reserved space, as Pebble's WAL does.
	g, gdone, err := create()
	if err != nil {
		return nil, err
	}
	defer gdone()
	// A filesystem without fallocate leaves the prealloc figures at 0 (and
	// wal() falls back to append).
	if syscall.Fallocate(int(g.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, 4<<20) == nil {
		r.PreallocP50, r.PreallocP99, n3, err = time1(g, func() error { _, err := g.Write(buf); return err })
		if err != nil {
			return nil, fmt.Errorf("fsync probe: %w", err)
		}
	}
	r.Samples = n1 + n2 + n3
	if n := r.Samples; n > 0 && wall > 0 {
		r.CPUPerSync = float64(cpu) / 1e3 / float64(n)
		r.CPUShare = float64(cpu) / float64(wall)
	}
	return r, nil
}
