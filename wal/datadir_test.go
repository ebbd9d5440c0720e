package wal

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openDir(dir string) (*Log, error) {
	return Open(Options{Dir: dir, Logger: quiet, Pebble: smallPebble})
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// A directory holding someone else's files is refused, named, and left as
// it was.
func TestOpenRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := openDir(dir)
	if err == nil {
		l.Close()
		t.Fatalf("Open of a directory holding x.txt succeeded")
	}
	if !errors.Is(err, ErrNotDataDir) {
		t.Errorf("got %v, want an error wrapping ErrNotDataDir", err)
	}
	for _, want := range []string{dir, "x.txt", "empty or new directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"x.txt"}) {
		t.Errorf("directory holds %v after the refusal, want only x.txt", got)
	}
}

// A missing directory is created; an empty one, one with only lost+found,
// or one left by a first start killed before Pebble wrote its MANIFEST
// becomes a store; an existing store opens again.
func TestOpenAcceptsNewAndKeelDirectories(t *testing.T) {
	for name, setup := range map[string]func(dir string) error{
		"missing":     func(dir string) error { return nil },
		"empty":       func(dir string) error { return os.MkdirAll(dir, 0o755) },
		"lost+found":  func(dir string) error { return os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700) },
		"interrupted": func(dir string) error { return writeFiles(dir, "LOCK", "marker.format-version.000001.024") },
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "data")
			if err := setup(dir); err != nil {
				t.Fatal(err)
			}
			l, err := openDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = openDir(dir)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			l.Close()
		})
	}
}

func writeFiles(dir string, names ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// A second Open of a directory in use says so, and the lock is released by
// Close.
func TestOpenLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := openDir(dir)
	if err == nil {
		l2.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
	want := fmt.Sprintf("data directory %s is already open in this process (pid %d)", dir, os.Getpid())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want ErrLocked saying %q", err, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err = openDir(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l2.Close()
}

const holderEnv = "KEEL_WAL_TEST_HOLD_DIR"

// TestMain runs the test binary as the helper process of
// TestOpenLockedByAnotherProcess when holderEnv is set.
func TestMain(m *testing.M) {
	if dir := os.Getenv(holderEnv); dir != "" {
		holdDir(dir)
		return
	}
	os.Exit(m.Run())
}

// holdDir opens dir, says so on stdout and holds it until stdin closes.
func holdDir(dir string) {
	l, err := openDir(dir)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer l.Close()
	fmt.Println("holding")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// Another process holding the directory is named by its PID.
func TestOpenLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holderEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "holding\n" {
		t.Fatalf("helper said %q, %v; want holding", line, err)
	}
	l, err := openDir(dir)
	if err == nil {
		l.Close()
		t.Fatal("Open of a directory another process holds succeeded")
	}
	want := fmt.Sprintf("another keel (pid %d) holds data directory %s", cmd.Process.Pid, dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want ErrLocked saying %q", err, want)
	}
}
