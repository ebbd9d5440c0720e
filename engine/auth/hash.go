package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// This file holds the password hashes a Mosquitto password file may carry,
// as Mosquitto writes them (src/password_mosq.c, apps/mosquitto_passwd in
// 2.0; libcommon/password_common.c in 2.1):
//
//	$7$ITERATIONS$SALT$HASH   PBKDF2-HMAC-SHA512; SALT 12 bytes (2.1 also
//	                          reads 64), HASH 64 bytes; both standard
//	                          base64 with padding. 2.0 writes 101
//	                          iterations, 2.1 writes 210,000.
//	$6$SALT$HASH              SHA-512(password || salt); salt 12 bytes (2.1
//	                          also 64), HASH 64 bytes. Weak: accepted with
//	                          a warning.
//	$2a$ $2b$ $2y$            bcrypt, as crypt(3) writes it.
//	$argon2id$v=19$m=M,t=T,p=P$SALT$HASH
//	                          Argon2id in the PHC string format (base64
//	                          without padding), as libargon2 and Mosquitto
//	                          2.1 write it.

// Iterations and salt length of the $7$ hashes Hash writes: Mosquitto 2.1's
// defaults, which Mosquitto 2.0 reads too (it takes the count from the
// hash).
const (
	HashIterations = 210000
	HashSaltLen    = 12
)

const (
	pbkdf2KeyLen = 64 // SHA-512's size; Mosquitto compares 64 bytes
	// maxArgon2Memory bounds m (KiB) so a typo in a file cannot make one
	// verification allocate more than 1 GiB.
	maxArgon2Memory = 1 << 20
	maxArgon2Time   = 1 << 10
)

// hasher is one parsed password hash.
type hasher interface {
	// verify reports, in time that does not depend on where the bytes
	// differ, whether password hashes to this hash.
	verify(password []byte) bool
	// weak names why this hash is weak, or "" if it is not.
	weak() string
}

// errNotHashed is parseHash's answer for a password that is not in any
// hash format: plain text, which only keel passwd -U reads.
var errNotHashed = errors.New("the password is not hashed (keel passwd -U hashes a plain-text file)")

// parseHash parses one password hash in any of the formats above.
func parseHash(s string) (hasher, error) {
	switch {
	case strings.HasPrefix(s, "$7$"):
		return parsePBKDF2(s[len("$7$"):])
	case strings.HasPrefix(s, "$6$"):
		return parseSHA512(s[len("$6$"):])
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$"):
		kind, _, _ := strings.Cut(s[1:], "$")
		if len(kind) > 12 || strings.IndexFunc(kind, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) >= 0 {
			// Not a hash type's name: perhaps a plain-text password that
			// starts with '$', which an error must not repeat.
			return nil, errNotHashed
		}
		return nil, fmt.Errorf("unknown hash type $%s$ (Keel reads $7$, $6$, $2a$/$2b$/$2y$ and $argon2id$)", kind)
	}
	return nil, errNotHashed
}

// decodeB64 decodes standard base64 as OpenSSL writes it (padded), and
// also without padding.
func decodeB64(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func decodeSaltAndHash(what, salt64, hash64 string) (salt, sum []byte, err error) {
	salt, err = decodeB64(salt64)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: salt is not base64", what)
	}
	if len(salt) != 12 && len(salt) != 64 {
		return nil, nil, fmt.Errorf("%s: salt is %d bytes, want 12 (or 64)", what, len(salt))
	}
	sum, err = decodeB64(hash64)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: hash is not base64", what)
	}
	if len(sum) != sha512.Size {
		return nil, nil, fmt.Errorf("%s: hash is %d bytes, want 64", what, len(sum))
	}
	return salt, sum, nil
}

// pbkdf2Hash is a $7$ hash.
type pbkdf2Hash struct {
	iterations int
	salt, sum  []byte
}

func parsePBKDF2(rest string) (hasher, error) {
	parts := strings.Split(rest, "$")
	if len(parts) != 3 {
		return nil, errors.New("$7$ hash: want $7$ITERATIONS$SALT$HASH")
	}
	n, err := strconv.Atoi(parts[0])
	if err != nil || n < 1 {
		return nil, fmt.Errorf("$7$ hash: iterations %q is not a positive number", parts[0])
	}
	salt, sum, err := decodeSaltAndHash("$7$ hash", parts[1], parts[2])
	if err != nil {
		return nil, err
	}
	return &pbkdf2Hash{iterations: n, salt: salt, sum: sum}, nil
}

func (h *pbkdf2Hash) verify(password []byte) bool {
	key, err := pbkdf2.Key(sha512.New, string(password), h.salt, h.iterations, pbkdf2KeyLen)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(key, h.sum) == 1
}

func (h *pbkdf2Hash) weak() string {
	if h.iterations < 1000 {
		return fmt.Sprintf("$7$ with %d iterations (Mosquitto 2.0's default) is fast to guess; keel passwd writes %d", h.iterations, HashIterations)
	}
	return ""
}

// sha512Hash is a $6$ hash.
type sha512Hash struct{ salt, sum []byte }

func parseSHA512(rest string) (hasher, error) {
	parts := strings.Split(rest, "$")
	if len(parts) != 2 {
		return nil, errors.New("$6$ hash: want $6$SALT$HASH")
	}
	salt, sum, err := decodeSaltAndHash("$6$ hash", parts[0], parts[1])
	if err != nil {
		return nil, err
	}
	return &sha512Hash{salt: salt, sum: sum}, nil
}

func (h *sha512Hash) verify(password []byte) bool {
	d := sha512.New()
	d.Write(password)
	d.Write(h.salt)
	return subtle.ConstantTimeCompare(d.Sum(nil), h.sum) == 1
}

func (h *sha512Hash) weak() string {
	return "$6$ (one round of salted SHA-512) is fast to guess; keel passwd rewrites it as $7$"
}

// bcryptHash is a $2a$, $2b$ or $2y$ hash.
type bcryptHash struct{ enc []byte }

func parseBcrypt(s string) (hasher, error) {
	if _, err := bcrypt.Cost([]byte(s)); err != nil {
		return nil, fmt.Errorf("bcrypt hash: %v", err)
	}
	return &bcryptHash{enc: []byte(s)}, nil
}

func (h *bcryptHash) verify(password []byte) bool {
	return bcrypt.CompareHashAndPassword(h.enc, password) == nil
}

func (h *bcryptHash) weak() string { return "" }

// argon2Hash is an $argon2id$ hash.
type argon2Hash struct {
	memory    uint32
	time      uint32
	threads   uint8
	salt, sum []byte
}

func parseArgon2id(s string) (hasher, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[2] != "v=19" {
		return nil, errors.New("$argon2id$ hash: want $argon2id$v=19$m=M,t=T,p=P$SALT$HASH")
	}
	var m, t, p uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("$argon2id$ hash: parameter %q is not a number", kv)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			p = n
		default:
			return nil, fmt.Errorf("$argon2id$ hash: unknown parameter %q", kv)
		}
	}
	switch {
	case m == 0 || m > maxArgon2Memory:
		return nil, fmt.Errorf("$argon2id$ hash: m=%d, want 1..%d KiB", m, maxArgon2Memory)
	case t == 0 || t > maxArgon2Time:
		return nil, fmt.Errorf("$argon2id$ hash: t=%d, want 1..%d", t, maxArgon2Time)
	case p == 0 || p > 255:
		return nil, fmt.Errorf("$argon2id$ hash: p=%d, want 1..255", p)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return nil, errors.New("$argon2id$ hash: salt is not base64 of at least 8 bytes")
	}
	sum, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(sum) < 16 {
		return nil, errors.New("$argon2id$ hash: hash is not base64 of at least 16 bytes")
	}
	return &argon2Hash{memory: uint32(m), time: uint32(t), threads: uint8(p), salt: salt, sum: sum}, nil
}

func (h *argon2Hash) verify(password []byte) bool {
	key := argon2.IDKey(password, h.salt, h.time, h.memory, h.threads, uint32(len(h.sum)))
	return subtle.ConstantTimeCompare(key, h.sum) == 1
}

func (h *argon2Hash) weak() string { return "" }

// Hash hashes password as Keel writes it: $7$ (PBKDF2-HMAC-SHA512) with
// HashIterations iterations and a random HashSaltLen-byte salt, which
// Mosquitto 2.0 and 2.1 both read.
func Hash(password string) (string, error) {
	return hashPBKDF2(password, HashIterations)
}

// HashWithIterations hashes password as $7$ with the given iterations
// (Mosquitto 2.0 writes 101). It is for tests, which verify thousands of
// passwords; a file of fewer than HashIterations loads with a warning.
func HashWithIterations(password string, iterations int) (string, error) {
	return hashPBKDF2(password, iterations)
}

func hashPBKDF2(password string, iterations int) (string, error) {
	salt := make([]byte, HashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: hash: %w", err)
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, pbkdf2KeyLen)
	if err != nil {
		return "", fmt.Errorf("auth: hash: %w", err)
	}
	return fmt.Sprintf("$7$%d$%s$%s", iterations,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key)), nil
}
