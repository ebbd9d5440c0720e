package listener_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener"
)

const wait = 5 * time.Second

// harness is a real broker (enginetest) served by a listener.Server the
// test configures, on a free loopback port.
type harness struct {
	addr   string
	srv    *listener.Server
	broker *enginetest.Broker

	mu    sync.Mutex
	users []string // CONNECT usernames the engine saw, after the listener's identity
}

// recorder is an Authenticator that lets everyone in and records the
// usernames the engine saw.
type recorder struct{ h *harness }

func (r recorder) Authenticate(_ context.Context, req auth.Request) (auth.Identity, packet.ReasonCode) {
	r.h.mu.Lock()
	r.h.users = append(r.h.users, req.Username)
	r.h.mu.Unlock()
	return auth.Identity{Username: req.Username, Anonymous: !req.HasUsername}, packet.CodeSuccess
}

// start serves a broker with srv (its Handler and Logger are set here).
func start(t *testing.T, srv *listener.Server) *harness {
	t.Helper()
	h := &harness{srv: srv}
	h.broker = enginetest.Start(t, enginetest.Options{Engine: engine.Options{Authenticator: recorder{h}}})
	if srv.Name == "" {
		srv.Name = "test"
	}
	srv.Handler = enginetest.Handler(h.broker.Engine)
	srv.Logger = enginetest.Logger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, listener.ErrServerClosed) {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
	})
	return h
}

func (h *harness) lastUser() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.users) == 0 {
		return "<none>"
	}
	return h.users[len(h.users)-1]
}

// eventually waits until cond holds, polling; it fails the test after wait.
// describe, if given, says what was seen instead.
func eventually(t *testing.T, what string, cond func() bool, describe ...func() string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, d := range describe {
				msg += ": " + d()
			}
			t.Fatalf("%s: still not so after %v%s", what, wait, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// refused waits until the listener has counted n refusals for reason.
func (h *harness) refused(t *testing.T, reason string, n uint64) {
	t.Helper()
	var got uint64
	eventually(t, fmt.Sprintf("refused for %s", reason), func() bool {
		got = h.srv.Stats().Refused[reason]
		return got == n
	}, func() string { return fmt.Sprintf("got %d, want %d (%+v)", got, n, h.srv.Stats()) })
}

// paho3 connects Eclipse Paho 3.1.1 with conn as its transport (dial
// makes it), subscribes to topic, publishes to it at QoS 1 and waits for
// the message: the broker serves this client end to end.
func paho3RoundTrip(t *testing.T, id string, dial func() (net.Conn, error)) mqtt.Client {
	t.Helper()
	got := make(chan string, 1)
	o := mqtt.NewClientOptions().AddBroker("tcp://keel").SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return dial() })
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("paho 3.1.1 connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	roundTrip3(t, c, id, got)
	return c
}

func roundTrip3(t *testing.T, c mqtt.Client, topic string, got chan string) {
	t.Helper()
	if got == nil {
		got = make(chan string, 1)
	}
	if tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish(topic, 1, false, "hello "+topic); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "hello "+topic {
			t.Fatalf("got %q, want %q", m, "hello "+topic)
		}
	case <-time.After(wait):
		t.Fatal("no message came back")
	}
}

// paho5Connect connects Eclipse Paho 5.0 over nc and returns its CONNACK
// (and the error, for a refusal).
func paho5Connect(t *testing.T, nc net.Conn, id string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	got := make(chan string, 1)
	// paho.golang writes a packet in several Writes, from more than one
	// goroutine (its pinger's); over TLS or WebSocket, where a Write is
	// not one writev, they interleave unless the conn is a sync.Locker,
	// which its WriteTo holds for the whole packet.
	c := paho.NewClient(paho.ClientConfig{Conn: &lockedConn{Conn: nc}, PacketTimeout: wait,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- string(pr.Packet.Payload)
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if err != nil {
		return c, ca, err
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: id, QoS: 1}}}); err != nil {
		t.Fatalf("paho 5.0 subscribe: %v", err)
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: id, QoS: 1, Payload: []byte("five")}); err != nil {
		t.Fatalf("paho 5.0 publish: %v", err)
	}
	select {
	case m := <-got:
		if m != "five" {
			t.Fatalf("paho 5.0 got %q, want five", m)
		}
	case <-time.After(wait):
		t.Fatal("paho 5.0: no message came back")
	}
	return c, ca, nil
}

func tlsDial(addr string, cfg *tls.Config) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		d := &net.Dialer{Timeout: wait}
		return tls.DialWithDialer(d, "tcp", addr, cfg)
	}
}

// lockedConn makes paho.golang write each packet whole (see paho5Connect).
type lockedConn struct {
	net.Conn
	sync.Mutex
}

// slowLoris dials addr and sends b a byte every 50 ms until the server
// closes the connection; it fails the test if the server does not.
func slowLoris(t *testing.T, addr string, b []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(c)
		closed <- err
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case err := <-closed:
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read: %v, want the server to close", err)
			}
			return
		case <-tick.C:
			if i < len(b) {
				c.Write(b[i : i+1])
			}
		case <-time.After(wait):
			t.Fatal("the slow client is still connected")
		}
	}
}
