package client_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// Topic aliases the server assigns are resolved before OnMessage: against
// keel, which assigns them (first with the name, then alone).
func TestTopicAliasesFromServer(t *testing.T) {
	addr := startKeel(t, engine.Options{})
	type got struct {
		topic   string
		alias   uint16
		payload string
	}
	recv := make(chan got, 16)
	sub := connect(t, client.Options{Addr: addr, Version: packet.V5, ClientID: "sub", CleanStart: true,
		TopicAliasMaximum: 2,
		OnMessage: func(p *packet.Publish) {
			recv <- got{strings.Clone(p.Topic), p.Props.TopicAlias, string(p.Payload)} // p aliases the read buffer
		}})
	subscribe(t, sub, "al/#", 1)
	pub := connect(t, client.Options{Addr: addr, Version: packet.V5, ClientID: "pub", CleanStart: true})
	seq := []string{"al/one", "al/two", "al/three", "al/one", "al/two", "al/three"}
	for i, topic := range seq {
		if _, err := pub.PublishWait(ctxT(t), &packet.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	for i, w := range []got{
		{"al/one", 1, "0"}, {"al/two", 2, "1"}, {"al/three", 0, "2"},
		{"al/one", 1, "3"}, {"al/two", 2, "4"}, {"al/three", 0, "5"},
	} {
		select {
		case g := <-recv:
			if g != w {
				t.Fatalf("message %d: got %+v, want %+v", i, g, w)
			}
		case <-ctxT(t).Done():
			t.Fatalf("message %d: none came", i)
		}
	}
}

// A server that breaks the alias rules ends the connection with
// ErrProtocol: an alias above the client's maximum [MQTT-3.3.2-11], or
// one used before it was given a topic.
func TestTopicAliasesFromServerBroken(t *testing.T) {
	for _, c := range []struct {
		name string
		pubs []*packet.Publish
	}{
		{"above maximum", []*packet.Publish{aliased("a/b", 3)}},
		{"unknown", []*packet.Publish{aliased("a/b", 1), aliased("", 2)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := scriptedServer(t, c.pubs)
			delivered := 0
			cl := connect(t, client.Options{Addr: addr, Version: packet.V5, ClientID: "c", CleanStart: true,
				TopicAliasMaximum: 2, OnMessage: func(*packet.Publish) { delivered++ }})
			<-cl.Done()
			if err := cl.Err(); !errors.Is(err, client.ErrProtocol) {
				t.Fatalf("got %v, want %v", err, client.ErrProtocol)
			}
			if delivered != len(c.pubs)-1 {
				t.Fatalf("delivered %d, want %d (all but the broken one)", delivered, len(c.pubs)-1)
			}
		})
	}
}

func aliased(topic string, alias uint16) *packet.Publish {
	p := &packet.Publish{Topic: topic, Payload: []byte("x")}
	p.Props.TopicAlias = alias
	p.Props.Set(packet.PropTopicAlias)
	return p
}

// scriptedServer accepts one connection on loopback, answers its CONNECT
// with success, writes pubs, then waits for the client to close.
func scriptedServer(t *testing.T, pubs []*packet.Publish) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		if _, err := packet.Read(br, 0, 0); err != nil {
			return
		}
		out, _ := (&packet.Connack{}).Append(nil, packet.V5)
		for _, p := range pubs {
			out, _ = p.Append(out, packet.V5)
		}
		nc.Write(out)
		for {
			if _, err := packet.Read(br, packet.V5, 0); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}
