// Package auth is who may connect and what they may touch: Mosquitto's
// password files (passwords.go, hash.go) and ACL files (acl.go), read as
// Mosquitto reads them; the Authenticator and Authorizer the engine calls
// on a connection's reader goroutine, with the file-based implementations;
// a per-connection decision Cache; and a Limiter on password
// verifications.
//
// The engine asks:
//
//	CONNECT      Authenticator.Authenticate; then Allow(Write) on the
//	             will's topic (5.0: CONNACK 0x87 if refused)
//	PUBLISH      Allow(Write) on the topic (after a topic alias is
//	             resolved); refused: 5.0 PUBACK/PUBREC 0x87, 3.1.1 the
//	             ack as usual and the message dropped (as Mosquitto)
//	SUBSCRIBE    Allow(Subscribe) per filter, "$share/group/" stripped
//	             (file ACL: always granted, as Mosquitto 2.0)
//	delivery     Allow(Read) on the message's topic, for every message
//	             handed to a client: live, retained on subscribe, queued
//	             for an offline session, the will
//	will         Allow(Write) again when the will is published
//
// $SYS: no client may publish to a "$SYS/..." topic (the ACL refuses it
// whatever the file says, as Mosquitto does), and '#' or '+' never match a
// '$' topic [MQTT-4.7.2-1], so reading $SYS needs a rule naming it
// ("topic read $SYS/#"). The engine refuses other '$' topics it does not
// define before it asks the ACL.
package auth

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keelmq/keel/engine/packet"
)

// Request is what a CONNECT and its connection say about a client.
type Request struct {
	ClientID string
	// Username and Password, with whether the CONNECT carried them
	// (MQTT distinguishes an empty username from none).
	Username    string
	HasUsername bool
	Password    []byte
	HasPassword bool
	Listener    string   // the listener's name
	Remote      net.Addr // as the PROXY header gave it, when there is one
	// TLS is the handshake's state, nil on a plain connection; a client
	// certificate is TLS.VerifiedChains[0][0] when one was verified.
	TLS *tls.ConnectionState
	// CertIdentity says that Username is the verified client
	// certificate's identity, which the listener made the username
	// (use_identity_as_username, use_subject_as_username): no password is
	// checked for it.
	CertIdentity bool
}

// CertCommonName is the common name of the client certificate the TLS
// handshake verified, or "" if none was.
func (r *Request) CertCommonName() string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName
}

// Identity is who a client is once authenticated: what the ACL and the
// session's owner check see.
type Identity struct {
	// Username is the name the client is known by (from the CONNECT, or
	// the certificate); "" when Anonymous.
	Username string
	// Anonymous is a client without a username: the ACL's lines before
	// any "user" apply to it.
	Anonymous bool
	// Credential is what the Authenticator granted the identity on, for
	// its Recheck after a reload (Files: the user's password entry, never
	// the password). It is not part of who the client is: two identities
	// are the same client when Username and Anonymous are equal. It is
	// not logged.
	Credential string
}

// Same reports whether id and o are the same client (Credential aside).
func (id Identity) Same(o Identity) bool {
	return id.Username == o.Username && id.Anonymous == o.Anonymous
}

// Rechecker is an Authenticator that can say, after a reload of what it
// decides on, whether an identity it granted still holds. It runs on the
// engine's core for every connected client, so it must not block or
// verify a hash: Files compares the entry the password was verified
// against instead, since it keeps no password.
type Rechecker interface {
	Recheck(id Identity, listener string) bool
}

// Authenticator decides a CONNECT. It returns CodeSuccess and the
// client's identity, or the reason code to refuse with (the engine maps a
// 5.0 code to a 3.1.1 return code: 0x86 -> 4, 0x87 -> 5, others -> 3).
//
// Authenticate runs on the connection's reader goroutine and may block
// (a hash verification takes milliseconds); it must return when ctx is
// done. It is called from many connections at once.
type Authenticator interface {
	Authenticate(ctx context.Context, req Request) (Identity, packet.ReasonCode)
}

// Authorizer decides access to a topic. Allow is called on the hot path
// (every PUBLISH, every delivery, through a Cache) from many goroutines at
// once; it must not block.
type Authorizer interface {
	Allow(id Identity, clientID, topic string, access Access) bool
}

// AllowAll is the Authorizer without an ACL file: everything is allowed
// except what Mosquitto refuses without one (publishing to $SYS,
// reading or writing $share topics).
type AllowAll struct{}

func (AllowAll) Allow(_ Identity, _, topic string, access Access) bool {
	return dollarAllowed(topic, access)
}

// Files is the Authenticator of a listener configured with Mosquitto's
// settings: password_file, allow_anonymous, use_identity_as_username.
// Its password file is swapped on reload; it is safe for concurrent use.
type Files struct {
	// AllowAnonymous lets a client without a username in, as anonymous.
	AllowAnonymous bool
	// UseIdentityAsUsername takes the username from the verified client
	// certificate's common name, and checks no password; a client
	// without a verified certificate is refused (0x87).
	UseIdentityAsUsername bool
	// Limiter, if not nil, bounds the password verifications.
	Limiter *Limiter

	passwords atomic.Pointer[Passwords]
}

// SetPasswords makes p the password file in force; nil is none (then any
// username is let in, as Mosquitto does without a password_file). A
// connection already authenticated is not rechecked here: the engine does
// that on reload.
func (f *Files) SetPasswords(p *Passwords) { f.passwords.Store(p) }

// Authenticate is Mosquitto's decision: a certificate identity if
// UseIdentityAsUsername; no username: anonymous if AllowAnonymous, else
// 0x87; a username: its password verified against the password file
// (unknown user and wrong password are both 0x86, in the same time).
func (f *Files) Authenticate(ctx context.Context, req Request) (Identity, packet.ReasonCode) {
	if req.CertIdentity {
		return Identity{Username: req.Username, Credential: credCert}, packet.CodeSuccess
	}
	if f.UseIdentityAsUsername {
		cn := req.CertCommonName()
		if cn == "" {
			return Identity{}, packet.CodeNotAuthorized
		}
		return Identity{Username: cn, Credential: credCert}, packet.CodeSuccess
	}
	if !req.HasUsername {
		if f.AllowAnonymous {
			return Identity{Anonymous: true, Credential: credAnonymous}, packet.CodeSuccess
		}
		return Identity{}, packet.CodeNotAuthorized
	}
	p := f.passwords.Load()
	if p == nil {
		return Identity{Username: req.Username, Credential: credNoFile}, packet.CodeSuccess
	}
	var done func(ok bool)
	if f.Limiter != nil {
		var code packet.ReasonCode
		done, code = f.Limiter.Acquire(ctx, req.Remote)
		if code != packet.CodeSuccess {
			return Identity{}, code
		}
	}
	// A CONNECT without a password still costs a verification, of
	// nothing, so that it answers like a wrong password.
	ok := p.Verify(req.Username, req.Password) && req.HasPassword
	if done != nil {
		done(ok)
	}
	if !ok {
		return Identity{}, packet.CodeBadUsernameOrPassword
	}
	entry, _ := p.entry(req.Username)
	return Identity{Username: req.Username, Credential: credPassword + entry}, packet.CodeSuccess
}

// Files' Credentials: how an identity was granted.
const (
	credCert      = "cert"      // a verified client certificate
	credAnonymous = "anonymous" // allow_anonymous
	credNoFile    = "username"  // a username, with no password file to check it
	credPassword  = "password:" // followed by the user's entry in the password file
)

// Recheck is the reload's verdict on a client f (or the Files it
// replaced) let in: a certificate identity holds; an anonymous client
// holds while f allows anonymous clients; a password holds while the
// user's entry in f's password file is the one it was verified against
// (a user removed or given a new password is out; the client reconnects
// with its new password). A username let in without a password file is
// out once there is one, since its password was never checked.
func (f *Files) Recheck(id Identity, _ string) bool {
	switch cred := id.Credential; {
	case cred == credCert:
		return true
	case cred == credAnonymous:
		return f.AllowAnonymous
	case cred == credNoFile:
		return f.passwords.Load() == nil
	case strings.HasPrefix(cred, credPassword):
		p := f.passwords.Load()
		if p == nil {
			return true
		}
		entry, ok := p.entry(id.Username)
		return ok && credPassword+entry == cred
	}
	return false
}

// dollarAllowed is Mosquitto's acl__check_dollar, which holds with or
// without an ACL file: "$SYS..." is not writable, "$share..." neither
// readable nor writable (a shared subscription's filter is checked
// without its prefix).
func dollarAllowed(topic string, access Access) bool {
	if len(topic) == 0 || topic[0] != '$' || access == Subscribe {
		return true
	}
	switch {
	case len(topic) >= 4 && topic[:4] == "$SYS":
		return access != Write
	case len(topic) >= 6 && topic[:6] == "$share":
		return false
	}
	return true
}

// Live is the Authorizer in force, swapped on reload, with a generation
// that Caches compare to know their decisions are stale. It is safe for
// concurrent use.
type Live struct {
	cur atomic.Pointer[liveState]
}

type liveState struct {
	az  Authorizer
	gen uint64
}

// NewLive returns a Live holding az at generation 1.
func NewLive(az Authorizer) *Live {
	l := &Live{}
	l.cur.Store(&liveState{az: az, gen: 1})
	return l
}

// Swap makes az the Authorizer in force and returns its generation; every
// Cache forgets its decisions at its next Allow.
func (l *Live) Swap(az Authorizer) uint64 {
	for {
		old := l.cur.Load()
		next := &liveState{az: az, gen: old.gen + 1}
		if l.cur.CompareAndSwap(old, next) {
			return next.gen
		}
	}
}

// Load returns the Authorizer in force and its generation.
func (l *Live) Load() (Authorizer, uint64) {
	s := l.cur.Load()
	return s.az, s.gen
}

// Allow asks the Authorizer in force, uncached.
func (l *Live) Allow(id Identity, clientID, topic string, access Access) bool {
	az, _ := l.Load()
	return az.Allow(id, clientID, topic, access)
}

// DefaultCacheSize is the number of decisions a Cache keeps when NewCache
// is given 0.
const DefaultCacheSize = 1024

// Cache is one connection's decisions (topic and access to verdict), so
// that the hot path asks the Authorizer once per topic, not once per
// message. It is emptied when the Live's generation changes (a reload)
// and when it is full (so it is bounded by its size, whatever topics a
// client uses). It is safe for concurrent use: the reader asks for
// PUBLISH, delivery asks for Read. SUBSCRIBE's decisions are not kept: a
// filter is asked about once, when it is subscribed, and a fleet's
// connections would each hold their filters' verdicts for nothing. Its
// map is made at the first decision it keeps.
type Cache struct {
	live     *Live
	id       Identity
	clientID string
	max      int

	mu struct {
		sync.Mutex
		gen uint64
		m   map[cacheKey]bool
	}
}

type cacheKey struct {
	topic  string
	access Access
}

// NewCache returns an empty cache of the decisions of live for the client
// (id, clientID), holding at most size of them (DefaultCacheSize if size
// <= 0).
func NewCache(live *Live, id Identity, clientID string, size int) *Cache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Cache{live: live, id: id, clientID: clientID, max: size}
}

// Allow is live's verdict for the client on topic, from the cache when it
// has one of the current generation.
func (c *Cache) Allow(topic string, access Access) bool {
	az, gen := c.live.Load()
	if access == Subscribe {
		return az.Allow(c.id, c.clientID, topic, access)
	}
	k := cacheKey{topic, access}
	c.mu.Lock()
	if c.mu.gen != gen {
		clear(c.mu.m)
		c.mu.gen = gen
	}
	v, ok := c.mu.m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = az.Allow(c.id, c.clientID, topic, access)
	c.mu.Lock()
	if c.mu.gen == gen { // not reloaded meanwhile
		if c.mu.m == nil {
			c.mu.m = make(map[cacheKey]bool)
		} else if len(c.mu.m) >= c.max {
			clear(c.mu.m)
		}
		c.mu.m[k] = v
	}
	c.mu.Unlock()
	return v
}
