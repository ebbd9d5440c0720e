package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"errors"

	"github.com/keelmq/keel/engine/packet"
	"github.com/xdg-go/scram"
)

// MQTT 5.0 enhanced authentication [MQTT-4.12.0-1]: the CONNECT names an
// Authentication Method, and the client and the server exchange AUTH
// packets until the server answers with CONNACK. Keel offers SCRAM-SHA-512
// (RFC 5802's exchange with SHA-512, as RFC 7677 does for SHA-256) against
// the same password file: a $7$ entry (PBKDF2-HMAC-SHA512, 64 bytes) is
// exactly SCRAM-SHA-512's SaltedPassword, so the server never sees the
// password and verifies with two HMACs instead of a PBKDF2 run, which the
// client pays. A user whose entry is another hash ($6$, bcrypt, argon2id)
// cannot use it: CONNACK 0x8C (Bad authentication method). SCRAM-SHA-256
// would need PBKDF2-HMAC-SHA256 entries, which Mosquitto's files do not
// hold, so it is 0x8C too, as is any other method.

// MethodSCRAMSHA512 is the Authentication Method Keel offers.
const MethodSCRAMSHA512 = "SCRAM-SHA-512"

// Enhanced is an Authenticator that also offers MQTT 5.0 enhanced
// authentication. Its calls run on the connection's reader goroutine.
type Enhanced interface {
	// StartAuth begins an exchange of method for the client of req (a
	// CONNECT, or a re-authentication, which must end with the same
	// identity). It returns CodeBadAuthenticationMethod for a method it
	// does not offer.
	StartAuth(req Request, method string) (Exchange, packet.ReasonCode)
}

// Exchange is one enhanced authentication in progress.
type Exchange interface {
	// Step takes the client's Authentication Data and returns the
	// server's. Until done, the engine sends out in an AUTH packet
	// (0x18, Continue authentication) and calls Step with the client's
	// answer; once done, code is the outcome, id the identity on success,
	// and out goes with the CONNACK (or the re-authentication's AUTH).
	Step(ctx context.Context, data []byte) (out []byte, done bool, id Identity, code packet.ReasonCode)
}

// StartAuth offers SCRAM-SHA-512 against f's password file.
func (f *Files) StartAuth(req Request, method string) (Exchange, packet.ReasonCode) {
	if method != MethodSCRAMSHA512 || req.CertIdentity || f.UseIdentityAsUsername {
		return nil, packet.CodeBadAuthenticationMethod
	}
	p := f.passwords.Load()
	if p == nil {
		return nil, packet.CodeBadAuthenticationMethod // no password file to check against
	}
	if f.Limiter != nil && f.Limiter.InBackoff(req.Remote) {
		return nil, packet.CodeConnectionRateExceeded
	}
	x := &scramExchange{files: f, passwords: p, req: req}
	srv, err := scram.SHA512.NewServer(x.lookup)
	if err != nil {
		return nil, packet.CodeUnspecifiedError
	}
	x.conv = srv.NewConversation()
	return x, packet.CodeSuccess
}

// scramExchange is one SCRAM-SHA-512 conversation.
type scramExchange struct {
	files     *Files
	passwords *Passwords
	req       Request
	conv      *scram.ServerConversation
	// wrongHash: the user exists with an entry SCRAM cannot use.
	wrongHash bool
	entry     string // the user's entry, for the identity's Credential
}

// errWrongHash is the lookup's refusal of an entry SCRAM cannot use.
var errWrongHash = errors.New("auth: the user's password entry is not $7$")

// lookup gives the conversation the user's stored keys, derived from the
// $7$ entry. An unknown user gets keys nobody knows, so that the exchange
// runs to its end and fails as a wrong password does.
func (x *scramExchange) lookup(user string) (scram.StoredCredentials, error) {
	var salt, salted []byte
	iters := HashIterations
	switch h := x.passwords.users[user].(type) {
	case *pbkdf2Hash:
		salt, salted, iters = h.salt, h.sum, h.iterations
		x.entry, _ = x.passwords.entry(user)
	case nil: // unknown: a random salted password, which no proof matches
		salt, salted = randomPassword()[:HashSaltLen], randomPassword()
		if d, ok := x.passwords.dummy.(*pbkdf2Hash); ok {
			iters = d.iterations // as the file's own entries
		}
	default:
		x.wrongHash = true
		return scram.StoredCredentials{}, errWrongHash
	}
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha512.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	stored := sha512.Sum512(mac(salted, "Client Key"))
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: iters},
		StoredKey:  stored[:],
		ServerKey:  mac(salted, "Server Key"),
	}, nil
}

// Step is the conversation: client-first, then client-final.
func (x *scramExchange) Step(_ context.Context, data []byte) ([]byte, bool, Identity, packet.ReasonCode) {
	out, err := x.conv.Step(string(data))
	switch {
	case x.wrongHash:
		return nil, true, Identity{}, packet.CodeBadAuthenticationMethod
	case err != nil:
		x.record(false)
		return nil, true, Identity{}, packet.CodeBadUsernameOrPassword
	case !x.conv.Done():
		return []byte(out), false, Identity{}, packet.CodeSuccess
	case !x.conv.Valid() || x.entry == "":
		x.record(false)
		return nil, true, Identity{}, packet.CodeBadUsernameOrPassword
	}
	user := x.conv.Username()
	if x.req.HasUsername && x.req.Username != user {
		// The CONNECT named one user and SCRAM proved another.
		x.record(false)
		return nil, true, Identity{}, packet.CodeBadUsernameOrPassword
	}
	x.record(true)
	return []byte(out), true, Identity{Username: user, Credential: credPassword + x.entry}, packet.CodeSuccess
}

func (x *scramExchange) record(ok bool) {
	if x.files.Limiter != nil {
		x.files.Limiter.Record(x.req.Remote, ok)
	}
}
