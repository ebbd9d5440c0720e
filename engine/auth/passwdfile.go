package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PasswordFile is a password file held as its lines, for editing (keel
// passwd): comments, blank lines and the other users' lines are written
// back as they were read.
type PasswordFile struct {
	name  string
	lines []string
}

// NewPasswordFile is an empty password file named name (in errors).
func NewPasswordFile(name string) *PasswordFile { return &PasswordFile{name: name} }

// ReadPasswordFile reads the password file at path for editing. Its lines
// must parse (splitPasswordLine); the hashes are not checked, so that -U
// can read plain-text passwords.
func ReadPasswordFile(path string) (*PasswordFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: password file: %w", err)
	}
	return ParsePasswordFile(path, b)
}

// ParsePasswordFile parses b as ReadPasswordFile does; name is for errors.
func ParsePasswordFile(name string, b []byte) (*PasswordFile, error) {
	f := &PasswordFile{name: name}
	seen := make(map[string]int)
	err := eachLine(bytes.NewReader(b), func(n int, line string) error {
		user, _, err := splitPasswordLine(line)
		if err != nil {
			return &LineError{File: name, Line: n, Reason: err.Error()}
		}
		if user != "" {
			if first, dup := seen[user]; dup {
				return &LineError{File: name, Line: n, Reason: fmt.Sprintf("user %q again (first on line %d)", user, first)}
			}
			seen[user] = n
		}
		f.lines = append(f.lines, line)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// find returns the index of user's line, or -1.
func (f *PasswordFile) find(user string) int {
	for i, line := range f.lines {
		if u, _, _ := splitPasswordLine(line); u != "" && u == user {
			return i
		}
	}
	return -1
}

// Set sets user's password, hashed with Hash: it replaces user's line
// where it is, or appends one.
func (f *PasswordFile) Set(user, password string) error {
	if err := ValidUsername(user); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if len(password) > maxField {
		return fmt.Errorf("auth: password longer than %d bytes", maxField)
	}
	h, err := Hash(password)
	if err != nil {
		return err
	}
	line := user + ":" + h
	if i := f.find(user); i >= 0 {
		f.lines[i] = line
	} else {
		f.lines = append(f.lines, line)
	}
	return nil
}

// Delete removes user's line, and reports whether there was one.
func (f *PasswordFile) Delete(user string) bool {
	i := f.find(user)
	if i < 0 {
		return false
	}
	f.lines = append(f.lines[:i], f.lines[i+1:]...)
	return true
}

// UpgradePlain hashes every password that is plain text (in no hash
// format), and returns how many it hashed. A line already hashed is kept
// as it is: unlike mosquitto_passwd -U, running it twice does not hash a
// hash. A line that looks like a hash but does not parse is an error, and
// nothing is changed.
func (f *PasswordFile) UpgradePlain() (int, error) {
	out := make([]string, len(f.lines))
	n := 0
	for i, line := range f.lines {
		out[i] = line
		user, plain, _ := splitPasswordLine(line)
		if user == "" {
			continue
		}
		_, err := parseHash(plain)
		switch {
		case err == nil:
			continue
		case !errors.Is(err, errNotHashed):
			return 0, &LineError{File: f.name, Line: i + 1, Reason: fmt.Sprintf("user %q: %v", user, err)}
		}
		h, err := Hash(plain)
		if err != nil {
			return 0, err
		}
		out[i] = user + ":" + h
		n++
	}
	f.lines = out
	return n, nil
}

// Bytes is the file's contents, each line ended by "\n".
func (f *PasswordFile) Bytes() []byte {
	var b strings.Builder
	for _, line := range f.lines {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// WriteFile writes the file to path atomically: a temporary file in the
// same directory, synced, then renamed over path, so a reader (a reload)
// sees the old file or the new one, never half of one. A new file is
// created with mode 0600 (it holds hashes); an existing file keeps its
// mode.
func (f *PasswordFile) WriteFile(path string) error {
	mode := fs.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("auth: write password file: %w", err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("auth: write password file: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(f.Bytes()); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("auth: write password file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the rename's durability; best effort
		d.Close()
	}
	return nil
}
