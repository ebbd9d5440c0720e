package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/bridge"
)

// The admin API's actions on one client, beside the views (admin.go):
//
//	POST   /api/clients/{id}/disconnect  close its connection (5.0: DISCONNECT 0x98); the session stays
//	DELETE /api/sessions/{id}            delete its session (a connected client is disconnected first);
//	                                     200 only once the deletion is synced
//
// Same access rules as every /api/ route (the token, or loopback peers),
// and one more for a browser: a request that carries an Origin other
// than the admin listener's own is refused (403), so that a page from
// elsewhere open on the operator's machine cannot make the browser act
// on a loopback-only API. Every action, done or refused, is logged with
// who asked (the peer, and how it was let in) and what.

// actionTimeout bounds one action: a deletion waits for its sync.
const actionTimeout = 30 * time.Second

// actionResult is the answer to an action.
type actionResult struct {
	ClientID string `json:"client_id"`
	Action   string `json:"action"` // "disconnect" or "delete_session"
	Done     bool   `json:"done"`
}

// action wraps an action route: the Origin check, then api's rules.
func (a *adminServer) action(name string, do func(ctx context.Context, b *engine.Broker, id string) error) http.HandlerFunc {
	h := a.api(func(st *adminState, r *http.Request) (any, error) {
		id := r.PathValue("id")
		who := []any{"client", id, "peer", r.RemoteAddr, "auth", a.authMode()}
		if id == "" {
			return nil, &httpError{http.StatusBadRequest, errors.New("want a client id")}
		}
		if name == "delete_session" && strings.HasPrefix(id, bridge.ClientIDPrefix) {
			// A bridge's session holds what is queued for its remote:
			// deleting it would drop acknowledged messages. The bridge's
			// [bridge] section is what owns it.
			a.logger.Warn("admin: "+name+": refused for a bridge's session", who...)
			return nil, &httpError{http.StatusConflict, fmt.Errorf("%q is a bridge's session (its queue for the remote): remove the [bridge] section instead", id)}
		}
		ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
		defer cancel()
		err := do(ctx, st.b, id)
		switch {
		case errors.Is(err, engine.ErrNotConnected), errors.Is(err, engine.ErrNoSession):
			a.logger.Info("admin: "+name+": no such client", who...)
			return nil, &httpError{http.StatusNotFound, err}
		case err != nil:
			a.logger.Error("admin: "+name+" failed", append(who, "err", err)...)
			return nil, err
		}
		a.logger.Info("admin: "+name, who...)
		return &actionResult{ClientID: id, Action: name, Done: true}, nil
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				a.logger.Warn("admin: refused an action from another origin", "origin", o, "peer", r.RemoteAddr,
					"method", r.Method, "path", r.URL.Path)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprintf(w, "{\"error\": %q}\n", "actions are taken from the admin listener's own origin only")
				return
			}
		}
		h(w, r)
	}
}

// authMode says how a request that permit let in was let in.
func (a *adminServer) authMode() string {
	if a.token != nil {
		return "token"
	}
	return "loopback"
}

// actionRoutes adds the action routes to mux.
func (a *adminServer) actionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/clients/{id}/disconnect", a.action("disconnect", func(ctx context.Context, b *engine.Broker, id string) error {
		return b.Disconnect(ctx, id)
	}))
	mux.HandleFunc("DELETE /api/sessions/{id}", a.action("delete_session", func(ctx context.Context, b *engine.Broker, id string) error {
		return b.DeleteSession(ctx, id)
	}))
}
