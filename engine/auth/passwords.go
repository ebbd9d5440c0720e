package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// A password file is Mosquitto's password_file, read as Mosquitto 2.0
// reads it (src/security_default.c, pwfile__parse):
//
//	# a comment: a line whose first character is '#'
//	alice:$7$210000$<salt>$<hash>
//	bob:$6$<salt>$<hash>
//
// The username is everything before the first ':', the hash the rest of
// the line, both with blanks (spaces, tabs) trimmed at their ends; blank
// lines are skipped. Where Mosquitto drops a line it cannot use with a
// log notice and carries on, Keel refuses the file, naming the line: a
// user who silently cannot log in is harder to find than a broker that
// does not start. Refused: a line without ':', an empty or over-long
// username, a username that is not UTF-8 (no CONNECT can carry it), a
// second line for the same user, and a hash that is not in one of the
// formats in hash.go, including a plain-text password.

// maxField is the longest username or hash Mosquitto reads (65,535 bytes,
// the longest MQTT string).
const maxField = 65535

// LineError is a line of a password or ACL file that Keel refuses.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Passwords is a loaded password file. It is immutable and safe for
// concurrent use; a reload makes a new one.
type Passwords struct {
	users map[string]hasher
	// hashes are the users' entries as written, so that a reload can tell
	// whose password changed without keeping any password (Identity's
	// Credential).
	hashes map[string]string
	// dummy is verified for an unknown user, so that the answer takes as
	// long as for a known user with a wrong password.
	dummy hasher
	// Warnings says which entries are weak ($6$, $7$ with few
	// iterations), one line each with the file and line; the caller logs
	// them.
	Warnings []string
}

// LoadPasswords reads the password file at path.
func LoadPasswords(path string) (*Passwords, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: password file: %w", err)
	}
	defer f.Close()
	return ParsePasswords(path, f)
}

// ParsePasswords reads a password file from r; name is the file's name in
// errors and warnings. An error for a refused line is a *LineError.
func ParsePasswords(name string, r io.Reader) (*Passwords, error) {
	p := &Passwords{users: make(map[string]hasher), hashes: make(map[string]string)}
	firstLine := make(map[string]int)
	err := eachLine(r, func(n int, line string) error {
		user, hash, err := splitPasswordLine(line)
		if err != nil {
			return &LineError{File: name, Line: n, Reason: err.Error()}
		}
		if user == "" && hash == "" {
			return nil // blank or comment
		}
		if first, dup := firstLine[user]; dup {
			return &LineError{File: name, Line: n, Reason: fmt.Sprintf("user %q again (first on line %d)", user, first)}
		}
		h, err := parseHash(hash)
		if err != nil {
			return &LineError{File: name, Line: n, Reason: fmt.Sprintf("user %q: %v", user, err)}
		}
		if w := h.weak(); w != "" {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s:%d: user %q: %s", name, n, user, w))
		}
		firstLine[user] = n
		p.users[user] = h
		p.hashes[user] = hash
		if p.dummy == nil {
			p.dummy = dummyLike(h)
		}
		return nil
	})
	if err != nil {
		var le *LineError
		if errors.As(err, &le) {
			return nil, err
		}
		return nil, fmt.Errorf("auth: password file %s: %w", name, err)
	}
	if p.dummy == nil {
		p.dummy = dummyLike(nil)
	}
	return p, nil
}

// eachLine calls fn with each line of r (numbered from 1, without its line
// ending), however long, stopping at fn's first error.
func eachLine(r io.Reader, fn func(n int, line string) error) error {
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadString('\n')
		if line == "" && err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if ferr := fn(n, line); ferr != nil {
			return ferr
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// splitPasswordLine parses one line of a password file; user and hash are
// both "" for a blank line or a comment.
func splitPasswordLine(line string) (user, hash string, err error) {
	if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
		return "", "", nil
	}
	u, h, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", errors.New("no ':' between username and password hash")
	}
	user, hash = trimBlanks(u), trimBlanks(h)
	if err := ValidUsername(user); err != nil {
		return "", "", err
	}
	switch {
	case hash == "":
		return "", "", fmt.Errorf("user %q has no password hash", user)
	case len(hash) > maxField:
		return "", "", fmt.Errorf("user %q: password hash longer than %d bytes", user, maxField)
	case strings.Contains(hash, ":"):
		return "", "", fmt.Errorf("user %q: a second ':' after the username", user)
	}
	return user, hash, nil
}

// ValidUsername reports whether user can be a password file's username:
// 1 to 65,535 bytes of UTF-8 (what a CONNECT can carry), without ':' (the
// separator) or control characters (as mosquitto_passwd requires).
func ValidUsername(user string) error {
	switch {
	case user == "":
		return errors.New("empty username")
	case len(user) > maxField:
		return fmt.Errorf("username longer than %d bytes", maxField)
	case !utf8.ValidString(user):
		return errors.New("username is not valid UTF-8")
	case strings.Contains(user, ":"):
		return errors.New("username contains ':'")
	}
	for _, r := range user {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("username contains the control character %U", r)
		}
	}
	return nil
}

// trimBlanks trims spaces and tabs at both ends, as Mosquitto's
// misc__trimblanks does.
func trimBlanks(s string) string { return strings.Trim(s, " \t") }

// dummyLike returns a hash of a random password with the cost of h (the
// file's first entry), or a $7$ hash at HashIterations when there is none.
func dummyLike(h hasher) hasher {
	pw := randomPassword()
	switch h := h.(type) {
	case *pbkdf2Hash:
		return &pbkdf2Hash{iterations: h.iterations, salt: bytes.Clone(h.salt), sum: make([]byte, pbkdf2KeyLen)}
	case *sha512Hash:
		return &sha512Hash{salt: bytes.Clone(h.salt), sum: make([]byte, sha512.Size)}
	case *argon2Hash:
		d := *h
		d.sum = make([]byte, len(h.sum))
		return &d
	case *bcryptHash:
		if cost, err := bcrypt.Cost(h.enc); err == nil {
			if enc, err := bcrypt.GenerateFromPassword(pw, cost); err == nil {
				return &bcryptHash{enc: enc}
			}
		}
	}
	return &pbkdf2Hash{iterations: HashIterations, salt: pw[:HashSaltLen], sum: make([]byte, pbkdf2KeyLen)}
}

// Verify reports whether password is user's password. An unknown user
// costs one verification of a dummy hash like the file's own, so the
// answer and its time are the same for an unknown user and a wrong
// password. Verify is safe for concurrent use.
func (p *Passwords) Verify(user string, password []byte) bool {
	h, known := p.users[user]
	if !known {
		h = p.dummy
	}
	ok := h.verify(password)
	return ok && known
}

// entry is user's hash as written in the file, and whether the file has
// the user.
func (p *Passwords) entry(user string) (string, bool) {
	h, ok := p.hashes[user]
	return h, ok
}

// Len is the number of users.
func (p *Passwords) Len() int { return len(p.users) }

// randomPassword is 32 random bytes, a password nobody knows.
func randomPassword() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never fails on the platforms Go supports (crypto/rand doc)
	return b
}
