package main

import (
	"fmt"
	"os"
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
}

// fsyncProbe times 64-byte writes each followed by fdatasync in a scratch
// file under dir, for at most budget per mode (or 2,000 samples).
func fsyncProbe(dir string, budget time.Duration) (*fsyncResult, error) {
	f, err := os.CreateTemp(dir, "keel-bench-fsync-*")
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	for i := range buf {
		buf[i] = byte(i)
	}
	time1 := func(write func() error) (p50, p99 float64, n int, err error) {
		var ds []time.Duration
		start := time.Now()
		for len(ds) < 2000 && (time.Since(start) < budget || len(ds) < 10) {
			t := time.Now()
			if err := write(); err != nil {
				return 0, 0, 0, err
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				return 0, 0, 0, err
			}
			ds = append(ds, time.Since(t))
		}
		slices.Sort(ds)
		q := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))]) / 1e3 }
		return q(0.5), q(0.99), len(ds), nil
	}
	r := &fsyncResult{Dir: dir}
	var n1, n2 int
	r.AppendP50, r.AppendP99, n1, err = time1(func() error { _, err := f.Write(buf); return err })
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	// Rewrite the blocks the append pass allocated, as a recycled log does.
	var off int64
	size := int64(n1) * int64(len(buf))
	r.RewriteP50, r.RewriteP99, n2, err = time1(func() error {
		_, err := f.WriteAt(buf, off)
		off = (off + int64(len(buf))) % size
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	r.Samples = n1 + n2
	return r, nil
}
