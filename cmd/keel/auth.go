package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
)

// brokerAuth is the broker's Authenticator: each listener's auth.Files
// (its allow_anonymous, the one password file), swapped as a whole on
// reload, so that a client is decided by one consistent set of rules.
type brokerAuth struct {
	cur     atomic.Pointer[authState]
	limiter *auth.Limiter
}

// authState is one loaded configuration of authentication and ACLs.
type authState struct {
	byListener map[string]*auth.Files
	passwords  *auth.Passwords // nil: no password_file
	acl        auth.Authorizer // the ACL file's, or auth.AllowAll
	aclRules   int
}

// loadAuth reads cfg's password and ACL files and makes each listener's
// authenticator; a file that cannot be read or parsed is an error naming
// it (and the line).
func loadAuth(cfg *config, limiter *auth.Limiter, logger *slog.Logger) (*authState, error) {
	st := &authState{byListener: map[string]*auth.Files{}, acl: auth.AllowAll{}}
	if cfg.PasswordFile != "" {
		p, err := auth.LoadPasswords(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", cfg.where("password_file"), err)
		}
		for _, w := range p.Warnings {
			logger.Warn("weak password hash", "entry", w)
		}
		st.passwords = p
	}
	if cfg.ACLFile != "" {
		a, err := auth.LoadACL(cfg.ACLFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", cfg.where("acl_file"), err)
		}
		for _, w := range a.Warnings {
			logger.Warn("acl file", "warning", w)
		}
		st.acl, st.aclRules = a, a.Len()
	}
	st.acl = bridgeACL{st.acl} // bridges are not held to the ACL (bridge.go)
	for _, l := range cfg.listeners() {
		f := &auth.Files{AllowAnonymous: cfg.anonymous(l), Limiter: limiter}
		f.SetPasswords(st.passwords)
		st.byListener[l.Name] = f
	}
	return st, nil
}

// Authenticate decides by the rules of the client's listener.
func (a *brokerAuth) Authenticate(ctx context.Context, req auth.Request) (auth.Identity, packet.ReasonCode) {
	f := a.cur.Load().byListener[req.Listener]
	if f == nil {
		return auth.Identity{}, packet.CodeNotAuthorized // no such listener: cannot happen
	}
	return f.Authenticate(ctx, req)
}

// Recheck is the reload's verdict on a connected client, by the rules now
// in force for its listener.
func (a *brokerAuth) Recheck(id auth.Identity, listener string) bool {
	f := a.cur.Load().byListener[listener]
	return f != nil && f.Recheck(id, listener)
}

// sessionOwners is whether sessions are held to their creator: when some
// client proves who it is (a password file, or certificate identities).
func sessionOwners(cfg *config) bool {
	if cfg.PasswordFile != "" {
		return true
	}
	for _, l := range cfg.listeners() {
		if l.UseIdentity || l.UseSubject {
			return true
		}
	}
	return false
}

// logAuth says what authentication is in force, never a secret.
func logAuth(logger *slog.Logger, msg string, cfg *config, st *authState) {
	users := 0
	if st.passwords != nil {
		users = st.passwords.Len()
	}
	args := []any{"password_file", cfg.PasswordFile, "users", users, "acl_file", cfg.ACLFile, "acl_rules", st.aclRules}
	for _, l := range cfg.listeners() {
		args = append(args, "anonymous."+l.Name, st.byListener[l.Name].AllowAnonymous)
	}
	logger.Info(msg, args...)
}

// reloadable are the keys SIGHUP applies; a change to any other key is
// logged as taking effect at the next start.
var reloadable = map[string]bool{"password_file": true, "acl_file": true, "allow_anonymous": true}

// reloadAll is SIGHUP: it rereads the configuration, the password and ACL
// files and the listeners' certificates. Authentication and ACLs change
// all at once or not at all: a file that fails keeps the old rules, and
// says why. Clients whose credentials no longer hold are disconnected
// (engine.Broker.Recheck); the ACL's new rules apply from the next
// message.
func reloadAll(reread func() (config, error), started *config, authn *brokerAuth, acl *auth.Live,
	b *engine.Broker, servers []mqttListener, logger *slog.Logger) {
	defer reloadTLS(servers, logger)
	cfg, err := reread()
	if err == nil {
		var st *authState
		if st, err = loadAuth(&cfg, authn.limiter, logger); err == nil {
			old := authn.cur.Load()
			for _, m := range servers {
				if st.byListener[m.srv.Name] == nil {
					// Still serving, gone from the file: it keeps its rules
					// until the restart that removes it.
					st.byListener[m.srv.Name] = old.byListener[m.srv.Name]
				}
			}
			authn.cur.Store(st)
			acl.Swap(st.acl)
			n := b.Recheck()
			logAuth(logger, "authentication reloaded", &cfg, st)
			if n > 0 {
				logger.Info("reload: disconnected clients whose credentials no longer hold", "clients", n)
			}
			if changed := restartOnly(started, &cfg); len(changed) > 0 {
				logger.Warn("reload: these keys take effect at the next start", "keys", strings.Join(changed, ","))
			}
			return
		}
	}
	logger.Error("reload failed: keeping the authentication and ACLs in force", "err", err)
}

// restartOnly lists the keys that differ between a and b and that a
// reload does not apply.
func restartOnly(a, b *config) []string {
	var out []string
	for _, k := range configKeys {
		if !reloadable[k.name] && k.get(a) != k.get(b) {
			out = append(out, k.name)
		}
	}
	byName := map[string]*listenerConfig{}
	for _, l := range b.listeners() {
		byName[l.Name] = l
	}
	for _, la := range a.listeners() {
		lb := byName[la.Name]
		if lb == nil {
			out = append(out, "[listener "+la.Name+"]")
			continue
		}
		delete(byName, la.Name)
		for _, k := range listenerKeys {
			if !reloadable[k.name] && k.get(la) != k.get(lb) {
				out = append(out, la.Name+"."+k.name)
			}
		}
	}
	for name := range byName {
		out = append(out, "[listener "+name+"]")
	}
	return append(out, bridgesChanged(a, b)...)
}

// StartAuth offers enhanced authentication (SCRAM-SHA-512) by the rules
// of the client's listener.
func (a *brokerAuth) StartAuth(req auth.Request, method string) (auth.Exchange, packet.ReasonCode) {
	f := a.cur.Load().byListener[req.Listener]
	if f == nil {
		return nil, packet.CodeNotAuthorized
	}
	return f.StartAuth(req, method)
}
