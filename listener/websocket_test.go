package listener_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/listener/listenertest"
)

// wsDial opens a WebSocket to h with the given subprotocols.
func wsDial(t *testing.T, url string, client *http.Client, header http.Header, protos ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos, HTTPClient: client, HTTPHeader: header})
}

// Paho 3.1.1 (its own WebSocket transport) and Paho 5.0 over ws:// and
// wss://, on the configured path.
func TestWebSocketWithPaho(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srvCert := ca.Server("server")
	for _, secure := range []bool{false, true} {
		srv := &listener.Server{WebSocket: &listener.WebSocket{Path: "/mqtt"}}
		scheme, client := "ws", http.DefaultClient
		tlsCfg := &tls.Config{RootCAs: ca.Pool()}
		if secure {
			srv.TLS = &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile}
			scheme = "wss"
			client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		}
		h := start(t, srv)
		url := scheme + "://" + h.addr + "/mqtt"

		got := make(chan string, 1)
		o := mqtt.NewClientOptions().AddBroker(url).SetClientID(scheme + "3").SetProtocolVersion(4).SetTLSConfig(tlsCfg).
			SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait)
		c3 := mqtt.NewClient(o)
		if tok := c3.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("%s: paho 3.1.1 connect: %v", scheme, tok.Error())
		}
		roundTrip3(t, c3, scheme+"3", got)
		c3.Disconnect(0)

		ws, _, err := wsDial(t, url, client, nil, "mqtt")
		if err != nil {
			t.Fatalf("%s: dial: %v", scheme, err)
		}
		if _, _, err := paho5Connect(t, websocket.NetConn(context.Background(), ws, websocket.MessageBinary), scheme+"5"); err != nil {
			t.Fatalf("%s: paho 5.0: %v", scheme, err)
		}
		eventually(t, scheme+" accepted", func() bool { return h.srv.Stats().Accepted == 2 })
	}
}

// MQTT over WebSocket is a byte stream: a packet may span frames and a
// frame may hold several packets.
func TestWebSocketFramesAreAStream(t *testing.T) {
	h := start(t, &listener.Server{WebSocket: &listener.WebSocket{}})
	ws, _, err := wsDial(t, "ws://"+h.addr+"/mqtt", nil, nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	connect := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 2, 'w', 's'}
	subscribe := []byte{0x82, 6, 0, 1, 0, 1, 'a', 1}
	pingreq := []byte{0xc0, 0}
	for _, frame := range [][]byte{connect[:5], connect[5:], append(append([]byte{}, subscribe...), pingreq...)} {
		if err := ws.Write(ctx, websocket.MessageBinary, frame); err != nil {
			t.Fatal(err)
		}
	}
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	got := make([]byte, 4+5+2)
	if _, err := io.ReadFull(nc, got); err != nil {
		t.Fatal(err)
	}
	// PINGRESP may overtake SUBACK: the reader answers it at once.
	want, or := []byte{0x20, 2, 0, 0, 0x90, 3, 0, 1, 1, 0xd0, 0}, []byte{0x20, 2, 0, 0, 0xd0, 0, 0x90, 3, 0, 1, 1}
	if string(got) != string(want) && string(got) != string(or) {
		t.Fatalf("got % x, want CONNACK, SUBACK, PINGRESP: % x (or PINGRESP first)", got, want)
	}
}

// Bad WebSocket input is refused and counted, and costs nothing else: an
// upgrade without an MQTT subprotocol, a wrong path, a plain HTTP request,
// an Origin not allowed, a text frame, a slow-loris upgrade.
func TestWebSocketBadInput(t *testing.T) {
	h := start(t, &listener.Server{WebSocket: &listener.WebSocket{Origins: []string{"app.example"}}, HandshakeTimeout: 500 * time.Millisecond})
	url := "ws://" + h.addr + "/mqtt"
	var refused uint64
	for _, tc := range []struct {
		name, url string
		header    http.Header
		protos    []string
		status    int
	}{
		{"no subprotocol", url, nil, nil, http.StatusBadRequest},
		{"another subprotocol", url, nil, []string{"chat"}, http.StatusBadRequest},
		{"wrong path", "ws://" + h.addr + "/ws", nil, []string{"mqtt"}, http.StatusNotFound},
		{"origin not allowed", url, http.Header{"Origin": {"http://evil.example"}}, []string{"mqtt"}, http.StatusForbidden},
	} {
		_, resp, err := wsDial(t, tc.url, nil, tc.header, tc.protos...)
		if err == nil || resp == nil || resp.StatusCode != tc.status {
			t.Fatalf("%s: got %v, %v; want HTTP %d", tc.name, resp, err, tc.status)
		}
		refused++
		h.refused(t, "websocket", refused)
	}
	resp, err := http.Get("http://" + h.addr + "/mqtt")
	if err != nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: got %v, %v; want 426", resp, err)
	}
	resp.Body.Close()
	refused++
	h.refused(t, "websocket", refused)

	// An allowed Origin is served; a text frame then closes the connection.
	ws, _, err := wsDial(t, url, nil, http.Header{"Origin": {"https://app.example"}}, "mqtt")
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ws.Write(ctx, websocket.MessageBinary, []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 2, 't', 'x'})
	if typ, b, err := ws.Read(ctx); err != nil || typ != websocket.MessageBinary || b[0] != 0x20 {
		t.Fatalf("CONNACK: got %v % x %v", typ, b, err)
	}
	ws.Write(ctx, websocket.MessageText, []byte{0xc0, 0})
	_, _, err = ws.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Fatalf("after a text frame: got %v, want the connection closed with 1003", err)
	}

	// A slow-loris upgrade, a byte at a time, is cut by the deadline.
	slowLoris(t, h.addr, []byte("GET /mqtt HTTP/1.1\r\nHost: keel\r\n"))
	h.refused(t, "handshake_timeout", 1)
}
