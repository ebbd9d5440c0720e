package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// sameSessions compares two inspections' sessions and stats, the header
// (time, directory) aside.
func sameSessions(t *testing.T, what string, a, b *sessionsView) {
	t.Helper()
	if !reflect.DeepEqual(a.Sessions, b.Sessions) {
		t.Errorf("%s: sessions differ:\n%+v\n%+v", what, a.Sessions, b.Sessions)
	}
}

// receive resumes the 3.1.1 session id on addr (our client) and collects n
// messages.
func receive(t *testing.T, addr, id string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, n+16)
	c, err := client.Connect(ctx, client.Options{Addr: addr, Version: packet.V311, ClientID: id,
		OnMessage: func(p *packet.Publish) { got <- p.Topic + " " + string(p.Payload) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.SessionPresent() {
		t.Errorf("%s: session present 0 on the restored data", id)
	}
	var out []string
	for len(out) < n {
		select {
		case m := <-got:
			out = append(out, m)
		case <-ctx.Done():
			t.Fatalf("%s: %d of %d messages, then nothing", id, len(out), n)
		}
	}
	return out
}

// A stopped broker's directory backed up, restored and served: the copy
// inspects the same, and the queued messages come out of it.
func TestBackupRestoreOffline(t *testing.T) {
	f := makeOpsFixture(t)
	before := digest(t, f.dir)
	dest := filepath.Join(t.TempDir(), "backup")
	code, out, errOut := runIn("backup", f.dir, dest)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("format %d, 3 sessions, 2 subscriptions, 10 queue entries (5 in flight), 2 retained", wal.FormatVersion)) {
		t.Fatalf("keel backup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if after := digest(t, f.dir); !sameFiles(before, after) {
		t.Errorf("keel backup changed the data directory:\nbefore %v\nafter  %v", before, after)
	}
	if code, _, errOut := runIn("backup", f.dir, dest); code != 1 || !strings.Contains(errOut, "exists") {
		t.Errorf("keel backup into an existing directory: exit %d, stderr %q; want 1", code, errOut)
	}

	data := filepath.Join(t.TempDir(), "restored")
	code, out, errOut = runIn("restore", dest, data)
	if code != 0 || !strings.Contains(out, "restored from") || !strings.Contains(out, "3 sessions") {
		t.Fatalf("keel restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := runIn("restore", dest, data); code != 1 || !strings.Contains(errOut, "never overwrites") {
		t.Errorf("keel restore over a data directory: exit %d, stderr %q; want 1", code, errOut)
	}
	if _, err := os.Stat(data + ".copying-" + strconv.Itoa(os.Getpid())); err == nil {
		t.Errorf("restore left its temporary directory")
	}
	sameSessions(t, "restored vs original", inspectJSON[sessionsView](t, f.dir, "sessions"), inspectJSON[sessionsView](t, data, "sessions"))

	// A file that is not a store is refused as a backup, and nothing is
	// created.
	notBackup := t.TempDir()
	os.WriteFile(filepath.Join(notBackup, "x"), []byte("x"), 0o644)
	other := filepath.Join(t.TempDir(), "other")
	if code, _, errOut := runIn("restore", notBackup, other); code != 1 || !strings.Contains(errOut, "no Pebble store") {
		t.Errorf("keel restore of a non-backup: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("a refused restore created %s", other)
	}

	b := enginetest.Start(t, enginetest.Options{FS: vfs.Default, Dir: data})
	got := receive(t, b.Addr, "sub311", fixtureMessages)
	for i, m := range got {
		if want := "q/a m" + strconv.Itoa(i); m != want {
			t.Errorf("restored sub311 message %d: %q, want %q", i, m, want)
		}
	}
}
