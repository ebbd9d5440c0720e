package engine

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/keelmq/keel/engine/packet"
)

func adminCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Disconnect: a 5.0 client gets DISCONNECT 0x98 Administrative action, a
// 3.1.1 client is closed; both keep their sessions, and the will of a
// connection the server closed is published [MQTT-3.1.2-8].
func TestAdminDisconnect(t *testing.T) {
	tb := startBroker(t, Options{})
	ctx := adminCtx(t)
	watch := dialRaw(t, tb.addr, packet.V311)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "wills/#", 1)

	v5 := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "five", CleanStart: true,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: u32(3600)},
		WillMessage: &paho.WillMessage{Topic: "wills/five", Payload: []byte("five gone"), QoS: 1}}, nil)
	v5.sub(t, paho.SubscribeOptions{Topic: "five/#", QoS: 1})
	if err := tb.b.Disconnect(ctx, "five"); err != nil {
		t.Fatalf("Disconnect(five): %v", err)
	}
	select {
	case d := <-v5.disc:
		if d.ReasonCode != byte(packet.CodeAdministrativeAction) {
			t.Errorf("DISCONNECT reason %#x, want 0x98 Administrative action", d.ReasonCode)
		}
	case <-time.After(pahoWait):
		t.Fatal("paho 5.0: no DISCONNECT from the server")
	}
	if p := watch.expectPublish(); p.Topic != "wills/five" || string(p.Payload) != "five gone" {
		t.Errorf("after the disconnect: got %s %q, want the will wills/five", p.Topic, p.Payload)
	}
	again := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "five", Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}}, nil)
	if !again.ack.SessionPresent {
		t.Error("paho 5.0: session present 0 after an administrative disconnect, want the session kept")
	}

	v3 := dialPaho3(t, tb.addr, "three", false, nil)
	v3.sub(t, "three/#", 2)
	if err := tb.b.Disconnect(ctx, "three"); err != nil {
		t.Fatalf("Disconnect(three): %v", err)
	}
	waitFor(t, "paho 3.1.1 to see its connection closed", func() bool { return !v3.IsConnected() })
	again3 := dialPaho3(t, tb.addr, "three", false, nil)
	if !again3.present {
		t.Error("paho 3.1.1: session present 0 after an administrative disconnect, want the session kept")
	}

	if err := tb.b.Disconnect(ctx, "nobody"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Disconnect(nobody) = %v, want ErrNotConnected", err)
	}
	again3.Disconnect(100)
	waitFor(t, "three offline", func() bool {
		var on bool
		tb.inCore(func() { on = tb.b.core.online["three"] != nil })
		return !on
	})
	if err := tb.b.Disconnect(ctx, "three"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Disconnect of an offline session = %v, want ErrNotConnected", err)
	}
}

// DeleteSession: an offline persistent session with a queue and a
// connected one are deleted; the connected client is told (5.0: 0x98)
// and its will is not published; once DeleteSession returns the deletion
// is synced, so a power loss right after does not bring them back.
func TestAdminDeleteSession(t *testing.T) {
	tb := startBroker(t, Options{})
	ctx := adminCtx(t)

	// "gone": a 3.1.1 persistent session, offline, three messages queued.
	gone := dialPaho3(t, tb.addr, "gone", false, nil)
	gone.sub(t, "q/#", 1)
	gone.Disconnect(100)
	waitFor(t, "gone offline", func() bool {
		var on bool
		tb.inCore(func() { on = tb.b.core.online["gone"] != nil })
		return !on
	})
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	for _, p := range []string{"1", "2", "3"} {
		pub.pub(t, &paho.Publish{Topic: "q/a", QoS: 1, Payload: []byte(p)})
	}
	if s := tb.b.Stats(); s.SessionsPersistent != 1 || s.QueuedMessages != 3 {
		t.Fatalf("before: %d persistent sessions, %d queued; want 1 and 3", s.SessionsPersistent, s.QueuedMessages)
	}

	// "live": a connected 5.0 persistent session with a will.
	watch := dialRaw(t, tb.addr, packet.V311)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "wills/#", 1)
	live := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "live", CleanStart: true,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: u32(3600)},
		WillMessage: &paho.WillMessage{Topic: "wills/live", Payload: []byte("live gone"), QoS: 1}}, nil)
	live.sub(t, paho.SubscribeOptions{Topic: "q/#", QoS: 1})

	if err := tb.b.DeleteSession(ctx, "live"); err != nil {
		t.Fatalf("DeleteSession(live): %v", err)
	}
	select {
	case d := <-live.disc:
		if d.ReasonCode != byte(packet.CodeAdministrativeAction) {
			t.Errorf("DISCONNECT reason %#x, want 0x98", d.ReasonCode)
		}
	case <-time.After(pahoWait):
		t.Fatal("paho 5.0: no DISCONNECT from the server")
	}
	// The will went with the session: the next message on wills/# is
	// this one, published after the deletion.
	pub.pub(t, &paho.Publish{Topic: "wills/marker", QoS: 1, Payload: []byte("after")})
	if p := watch.expectPublish(); p.Topic != "wills/marker" {
		t.Errorf("after deleting live: got %s %q, want wills/marker (the will is not published)", p.Topic, p.Payload)
	}

	if err := tb.b.DeleteSession(ctx, "gone"); err != nil {
		t.Fatalf("DeleteSession(gone): %v", err)
	}
	if err := tb.b.DeleteSession(ctx, "gone"); !errors.Is(err, ErrNoSession) {
		t.Errorf("DeleteSession(gone) twice = %v, want ErrNoSession", err)
	}
	if s := tb.b.Stats(); s.SessionsPersistent != 0 || s.QueuedMessages != 0 {
		t.Errorf("after: %d persistent sessions, %d queued; want none", s.SessionsPersistent, s.QueuedMessages)
	}
	// Nothing is routed to them any more.
	pub.pub(t, &paho.Publish{Topic: "q/a", QoS: 1, Payload: []byte("4")})
	if s := tb.b.Stats(); s.QueuedMessages != 0 {
		t.Errorf("a publish after the deletion queued %d messages, want 0", s.QueuedMessages)
	}

	// A power loss now keeps only what was synced: the deletions were.
	tb.crash()
	if s := tb.b.Stats(); s.SessionsPersistent != 0 || s.QueuedMessages != 0 {
		t.Errorf("after the crash: %d persistent sessions, %d queued; want none", s.SessionsPersistent, s.QueuedMessages)
	}
	for _, id := range []string{"gone", "live"} {
		c := dialPaho3(t, tb.addr, id, false, nil)
		if c.present {
			t.Errorf("%s: session present after it was deleted and the broker restarted", id)
		}
		c.Disconnect(0)
	}
}

// A deletion whose commit fails is reported as failed, never as done:
// HTTP 200 would be a false ack.
func TestAdminDeleteSessionStoreFault(t *testing.T) {
	tb, toggle, _ := startFaulty(t, Options{}, syscall.EIO)
	s := dialRaw(t, tb.addr, packet.V311)
	s.connect("s", false, nil)
	s.subscribe(1, "x", 1)
	s.send(&packet.Disconnect{})
	waitFor(t, "s offline", func() bool {
		var on bool
		tb.inCore(func() { on = tb.b.core.online["s"] != nil })
		return !on
	})
	toggle.On()
	err := tb.b.DeleteSession(adminCtx(t), "s")
	if err == nil || !errors.Is(err, tb.b.Err()) {
		t.Fatalf("DeleteSession during a store fault = %v, want the store's failure (%v)", err, tb.b.Err())
	}
}
