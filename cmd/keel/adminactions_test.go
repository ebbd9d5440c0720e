package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The admin API's actions on the binary, with real clients: disconnect
// (5.0 gets 0x98, the session stays), delete a session (offline with a
// queue, and connected: disconnected first), both refused without the
// token or from another origin, logged with who and what, and the
// deletions still true after a restart.
func TestAdminActions(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "admin.token")
	const tok = "fedcba9876543210fedcba9876543210"
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	conf := writeConfig(t, "data = "+data+"\nlisten = 127.0.0.1:0\nadmin = 127.0.0.1:0\nadmin_token_file = "+tokFile+"\n")
	k := startKeel(t, "serve", "--config", conf)
	call := func(method, path string, set func(*http.Request)) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+k.metrics+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if set != nil {
			set(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var v map[string]any
		_ = json.Unmarshal(body, &v)
		return resp.StatusCode, v
	}

	// five: a connected 5.0 persistent session.
	nc, err := net.Dial("tcp", k.addr)
	if err != nil {
		t.Fatal(err)
	}
	disc := make(chan *paho.Disconnect, 1)
	five := paho.NewClient(paho.ClientConfig{Conn: nc, PacketTimeout: 10 * time.Second,
		OnServerDisconnect: func(d *paho.Disconnect) { disc <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := five.Connect(ctx, &paho.Connect{ClientID: "five", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}}); err != nil {
		t.Fatal(err)
	}
	// three: a 3.1.1 persistent session, offline with two queued messages.
	three := pahoClient(t, k.addr, "three", false)
	if tok := three.Subscribe("q/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	three.Disconnect(250)
	waitAdmin(t, k.metrics, "three offline", func() bool {
		code, v := call("GET", "/api/sessions/three", nil)
		s, _ := v["session"].(map[string]any)
		return code == 200 && s["connected"] == false
	})
	pub := pahoClient(t, k.addr, "pub", true)
	for _, p := range []string{"a", "b"} {
		if tok := pub.Publish("q/x", 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	// live: a connected 3.1.1 persistent session.
	live := pahoClient(t, k.addr, "live", false)

	for _, tc := range []struct {
		method, path string
		set          func(*http.Request)
		want         int
	}{
		{"POST", "/api/clients/five/disconnect", func(r *http.Request) { r.Header.Del("Authorization") }, 401},
		{"POST", "/api/clients/five/disconnect", func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, 403},
		{"DELETE", "/api/sessions/three", func(r *http.Request) { r.Header.Set("Authorization", "Bearer not-the-token-not-the-token") }, 401},
		{"POST", "/api/clients/nobody/disconnect", nil, 404},
		{"DELETE", "/api/sessions/nobody", nil, 404},
		// A bridge's session is its queue for the remote: never deleted
		// here (refused before it is looked up).
		{"DELETE", "/api/sessions/$bridge%2Fcentral", nil, 409},
		{"GET", "/api/clients/five/disconnect", nil, 405},
	} {
		if code, v := call(tc.method, tc.path, tc.set); code != tc.want {
			t.Errorf("%s %s: %d %v, want %d", tc.method, tc.path, code, v, tc.want)
		}
	}
	select {
	case <-five.Done():
		t.Fatal("five was disconnected by a refused request")
	case d := <-disc:
		t.Fatalf("five was sent %+v by a refused request", d)
	default:
	}

	if code, v := call("POST", "/api/clients/five/disconnect", func(r *http.Request) { r.Header.Set("Origin", "http://"+k.metrics) }); code != 200 || v["done"] != true {
		t.Fatalf("disconnect five: %d %v", code, v)
	}
	select {
	case d := <-disc:
		if d.ReasonCode != 0x98 {
			t.Errorf("five: DISCONNECT reason %#x, want 0x98 Administrative action", d.ReasonCode)
		}
	case <-ctx.Done():
		t.Fatal("five: no DISCONNECT from the server")
	}
	k.waitLog(t, `msg="admin: disconnect" component=admin client=five`)

	if code, v := call("DELETE", "/api/sessions/three", nil); code != 200 || v["done"] != true {
		t.Fatalf("delete three: %d %v", code, v)
	}
	if code, v := call("DELETE", "/api/sessions/live", nil); code != 200 || v["done"] != true {
		t.Fatalf("delete live: %d %v", code, v)
	}
	waitAdmin(t, k.metrics, "live's connection closed", func() bool { return !live.IsConnectionOpen() })
	for _, id := range []string{"three", "live"} {
		if code, _ := call("GET", "/api/sessions/"+id, nil); code != 404 {
			t.Errorf("GET /api/sessions/%s after its deletion: %d, want 404", id, code)
		}
	}
	if code, _ := call("GET", "/api/sessions/five", nil); code != 200 {
		t.Errorf("GET /api/sessions/five after a disconnect: %d, want 200 (the session stays)", code)
	}
	logged := k.stderr()
	for _, want := range []string{`msg="admin: delete_session" component=admin client=three peer=127.0.0.1:`, `msg="admin: delete_session" component=admin client=live`,
		`auth=token`, `msg="admin: refused an action from another origin" component=admin origin=http://evil.example`,
		`msg="admin: disconnect: no such client" component=admin client=nobody`, `listener=default client=live reason="session deleted by an administrator"`,
		`listener=default client=five reason="disconnected by an administrator"`} {
		if !strings.Contains(logged, want) {
			t.Errorf("keel's log lacks %q", want)
		}
	}
	if strings.Contains(logged, tok) {
		t.Error("the admin token reached the log")
	}
	pub.Disconnect(250)
	k.stop(t)

	// After a restart: five is there, the deleted sessions are not.
	k = startKeel(t, "serve", "--config", conf)
	t.Setenv("KEEL_ADMIN_TOKEN", tok) // keel inspect --admin presents it
	st := inspectJSON[sessionsView](t, "--admin", k.metrics, "sessions")
	if len(st.Sessions) != 1 || st.Sessions[0].ClientID != "five" {
		t.Errorf("sessions after the restart: %+v, want five only", st.Sessions)
	}
	for _, id := range []string{"three", "live"} {
		c, present := pahoConnect(t, k.addr, id, false)
		if present {
			t.Errorf("%s: session present after its deletion and a restart", id)
		}
		c.Disconnect(100)
	}
	k.stop(t)
}

// pahoClient connects a Paho 3.1.1 client.
func pahoClient(t *testing.T, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	c, _ := pahoConnect(t, addr, id, clean)
	return c
}

// pahoConnect connects a Paho 3.1.1 client and says whether the server
// had its session.
func pahoConnect(t *testing.T, addr, id string, clean bool) (mqtt.Client, bool) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c, tok.(*mqtt.ConnectToken).SessionPresent()
}

func u32(v uint32) *uint32 { return &v }
