// Package waltest holds filesystem wrappers for storage tests: a gate that
// holds WAL syncs, so a test can make the disk as slow as it needs,
// deterministically.
package waltest

import (
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// GateFS holds every sync of a Pebble WAL file (*.log) while the gate is
// shut, so that commits pile up behind one sync.
type GateFS struct {
	vfs.FS
	mu      sync.Mutex
	cond    sync.Cond
	shut    bool
	waiting int // syncs held at the gate
	passed  int // syncs that went through
}

// NewGateFS wraps fs with an open gate.
func NewGateFS(fs vfs.FS) *GateFS {
	g := &GateFS{FS: fs}
	g.cond.L = &g.mu
	return g
}

// Hold makes later syncs wait; Release lets them (and the waiting ones) go.
func (g *GateFS) Hold()    { g.set(true) }
func (g *GateFS) Release() { g.set(false) }

func (g *GateFS) set(shut bool) {
	g.mu.Lock()
	g.shut = shut
	g.cond.Broadcast()
	g.mu.Unlock()
}

// AwaitBlocked waits until n syncs are held at the gate.
func (g *GateFS) AwaitBlocked(n int) {
	g.mu.Lock()
	for g.waiting < n {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// Syncs is the number of WAL syncs that have gone through the gate.
func (g *GateFS) Syncs() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.passed
}

func (g *GateFS) pass() {
	g.mu.Lock()
	g.waiting++
	g.cond.Broadcast()
	for g.shut {
		g.cond.Wait()
	}
	g.waiting--
	g.passed++
	g.mu.Unlock()
}

func (g *GateFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return gateFile{File: f, g: g}, nil
}

func (g *GateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.Create(name, c)
	return g.wrap(name, f, err)
}

func (g *GateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, c)
	return g.wrap(newname, f, err)
}

type gateFile struct {
	vfs.File
	g *GateFS
}

func (f gateFile) Sync() error     { f.g.pass(); return f.File.Sync() }
func (f gateFile) SyncData() error { f.g.pass(); return f.File.SyncData() }
func (f gateFile) SyncTo(n int64) (bool, error) {
	f.g.pass()
	return f.File.SyncTo(n)
}
