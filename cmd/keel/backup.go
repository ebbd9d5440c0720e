package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/keelmq/keel/wal"
)

const backupUsage = `Usage:
  keel backup DATA DEST                a stopped broker's data directory
  keel backup --admin HOST:PORT DEST   a running broker's, taken by it while it serves

DEST may also be given as --to DEST. DEST must not exist. The backup is a consistent copy of the store (a
Pebble checkpoint): every message and session change acknowledged before
the backup began is in it, and of what came meanwhile each commit is
wholly there or wholly absent, as after a power cut. Tables are
hard-linked when DEST is on the same filesystem (they never change), so
a backup costs little space until the broker compacts them.

With --admin, the running broker writes DEST on its own machine (a
relative DEST is made absolute here first), then opens the copy and
checks it; KEEL_ADMIN_TOKEN in the environment, if set, is sent as the
admin token. Either way keel prints what the backup holds. Start a broker
on it with keel restore DEST DATA (or keel serve --data DEST).
Exit status: 0 done, 1 failed, 2 usage error.
`

const restoreUsage = `Usage:
  keel restore BACKUP DATA

Checks BACKUP (it opens, its format version is one this keel reads, its
sessions, queues and retained messages decode) and copies it into DATA,
which must not exist or be empty: keel restore never overwrites a data
directory. The copy is made beside DATA and renamed into place once
synced, so a restore cut short leaves no half data directory; it is then
opened and checked again. Start keel with --data DATA afterwards.
Exit status: 0 done, 1 failed, 2 usage error.
`

// backupResult is what a backup holds, as keel backup prints it and the
// admin API answers POST /api/backup.
type backupResult struct {
	Dest          string       `json:"dest"`
	StartedAt     time.Time    `json:"started_at"`
	TookSeconds   float64      `json:"took_seconds"`
	FormatVersion uint32       `json:"format_version"`
	Stats         inspectStats `json:"stats"`
}

func backupCmd(args []string, stdout, stderr io.Writer) int {
	c := newSubcommand("backup", backupUsage)
	admin := c.fs.String("admin", "", "")
	to := c.fs.String("to", "", "")
	pos, code, ok := c.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if *to != "" {
		pos = append(pos, *to) // --to DEST is DEST, last
	}
	var res *backupResult
	var err error
	switch {
	case *admin != "" && len(pos) == 1:
		var dest string
		if dest, err = filepath.Abs(pos[0]); err == nil {
			res = new(backupResult)
			err = adminPost(*admin, "/api/backup", map[string]string{"dest": dest}, res)
		}
	case *admin == "" && len(pos) == 2:
		res, err = backupOffline(pos[0], pos[1])
	case *admin != "":
		return c.usageError(stderr, "with --admin, want DEST only")
	default:
		return c.usageError(stderr, "want DATA DEST")
	}
	if err != nil {
		return c.fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: backup taken at %s in %.3fs: %s\n", res.Dest, res.StartedAt.Format(time.RFC3339Nano),
		res.TookSeconds, holds(res.FormatVersion, res.Stats))
	return 0
}

func holds(format uint32, s inspectStats) string {
	return fmt.Sprintf("format %d, %d sessions, %d subscriptions, %d queue entries (%d in flight), %d retained",
		format, s.Sessions, s.Subscriptions, s.QueueEntries, s.Inflight, s.Retained)
}

// backupOffline checkpoints a stopped broker's data directory.
func backupOffline(data, dest string) (*backupResult, error) {
	if _, err := os.Stat(dest); err == nil {
		return nil, fmt.Errorf("%s exists: a backup goes to a new directory", dest)
	}
	r, err := wal.OpenReadOnly(wal.Options{Dir: data})
	if errors.Is(err, wal.ErrLocked) {
		return nil, fmt.Errorf("%w\n(a running keel is backed up by itself, through its admin listener: keel backup --admin HOST:PORT DEST)", err)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close() // held through the copy: no keel starts on data meanwhile
	start := time.Now()
	// A stopped store does not change: its files are the consistent copy.
	if err := copyStore(data, dest); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	took := time.Since(start)
	res, err := checkBackup(dest)
	if err != nil {
		return nil, err
	}
	res.StartedAt, res.TookSeconds = start.UTC(), took.Seconds()
	return res, nil
}

// checkBackup opens dir read-only and reads everything a broker would
// rebuild from it.
func checkBackup(dir string) (*backupResult, error) {
	r, err := wal.OpenReadOnly(wal.Options{Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("check backup: %w", err)
	}
	defer r.Close()
	return checkStore(r)
}

func checkStore(r *wal.ReadOnly) (*backupResult, error) {
	if r.Format() == 0 {
		return nil, fmt.Errorf("check backup: %s holds an empty store with no format version", r.Dir())
	}
	in, err := inspect(r, time.Now())
	if err != nil {
		return nil, fmt.Errorf("check backup %s: %w", r.Dir(), err)
	}
	return &backupResult{Dest: r.Dir(), FormatVersion: r.Format(), Stats: in.Stats}, nil
}

func restoreCmd(args []string, stdout, stderr io.Writer) int {
	c := newSubcommand("restore", restoreUsage)
	pos, code, ok := c.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		return c.usageError(stderr, "want BACKUP DATA")
	}
	res, err := restore(pos[0], pos[1])
	if err != nil {
		return c.fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: restored from %s: %s\n", pos[1], pos[0], holds(res.FormatVersion, res.Stats))
	return 0
}

// restore checks backup, copies it into data through a synced temporary
// directory and a rename, and checks the result.
func restore(backup, data string) (*backupResult, error) {
	r, err := wal.OpenReadOnly(wal.Options{Dir: backup})
	if err != nil {
		return nil, fmt.Errorf("check backup: %w", err)
	}
	defer r.Close() // held through the copy: nothing starts on the backup meanwhile
	want, err := checkStore(r)
	if err != nil {
		return nil, err
	}
	switch ents, err := os.ReadDir(data); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	case len(ents) > 0:
		return nil, fmt.Errorf("%s is not empty: keel restore never overwrites a data directory; "+
			"move it aside or name a new one", data)
	}
	if err := copyStore(backup, data); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	got, err := checkBackup(data)
	if err != nil {
		return nil, fmt.Errorf("restore: the copy in %s does not check: %w", data, err)
	}
	if got.Stats.Sessions != want.Stats.Sessions || got.Stats.QueueEntries != want.Stats.QueueEntries ||
		got.Stats.Retained != want.Stats.Retained || got.Stats.Subscriptions != want.Stats.Subscriptions {
		return nil, fmt.Errorf("restore: the copy in %s holds %s, the backup %s", data,
			holds(got.FormatVersion, got.Stats), holds(want.FormatVersion, want.Stats))
	}
	return got, nil
}

// copyStore copies the store in src to dst (missing, or an empty
// directory) through a synced temporary directory beside dst and a
// rename, so that a copy cut short never looks like a data directory.
func copyStore(src, dst string) error {
	names, err := storeFiles(src)
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.copying-%d", filepath.Clean(dst), os.Getpid())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	for _, n := range names {
		if err := copyFileSynced(filepath.Join(src, n), filepath.Join(tmp, n)); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	os.Remove(dst) // an empty directory, if there is one: rename needs the name free
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(dst)))
}

// storeFiles lists the files of a backup to copy: every regular file
// but Pebble's LOCK. A subdirectory is refused: a Keel store has none.
func storeFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		switch {
		case e.Name() == "LOCK":
		case e.Type().IsRegular():
			names = append(names, e.Name())
		default:
			return nil, fmt.Errorf("%s holds %s, which is not a regular file: not a Keel store", dir, e.Name())
		}
	}
	return names, nil
}

func copyFileSynced(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
