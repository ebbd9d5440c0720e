package main

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/coder/websocket"

	mqtt "github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/listener/listenertest"
)

// TLS on (Config.TLS, -tls): the broker under test serves its one listener
// over TLS with a server certificate made for the run (a fresh CA and a
// certificate for 127.0.0.1 and localhost, written into the work dir), and
// every client of the run connects over TLS, verifying it against that CA.
// A kill -9 then also cuts TLS sessions mid-record; the oracle is the same.
// BrokerCmd gets the files' paths as {cafile}, {certfile} and {keyfile}.
//
// WebSocket on (Config.WebSocket, -ws): the listener speaks MQTT over
// WebSocket (subprotocol mqtt, path /mqtt) and every client dials it so;
// with TLS too, that is wss://.
const (
	tlsCAFile   = "tls-ca.pem"
	tlsCertFile = "tls-server.pem"
	tlsKeyFile  = "tls-server.key"
)

// writeTLSFiles makes the run's CA and server certificate in work and
// returns the client side's configuration.
func writeTLSFiles(work string) (*tls.Config, error) {
	ca, err := listenertest.MakeCA(work, strings.TrimSuffix(tlsCAFile, ".pem"))
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(tlsCertFile, ".pem")
	if _, err := ca.MakeCert(name, listenertest.Options{Subject: pkix.Name{CommonName: "localhost"}, Server: true}); err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, nil
}

// keelListenerConf is the configuration that gives keel's default
// listener the run's certificate and/or WebSocket ("" for neither);
// --listen and --data come as flags.
func keelListenerConf(withTLS, ws bool, work string) string {
	var conf string
	if withTLS {
		conf += fmt.Sprintf("# -tls (tls.go)\ncertfile = %s\nkeyfile = %s\n", filepath.Join(work, tlsCertFile), filepath.Join(work, tlsKeyFile))
	}
	if ws {
		conf += "# -ws (tls.go)\nprotocol = websockets\npath = /mqtt\n"
	}
	return conf
}

// dial is the run's client dialer: TLS and/or WebSocket as configured,
// else nil (plain TCP to Options.Addr).
func (r *run) dial() func(ctx context.Context) (net.Conn, error) {
	switch {
	case r.cfg.WebSocket:
		scheme, client := "ws", http.DefaultClient
		if r.tls != nil {
			scheme = "wss"
			client = &http.Client{Transport: &http.Transport{TLSClientConfig: r.tls}}
		}
		url := scheme + "://" + r.addr + "/mqtt"
		return func(ctx context.Context) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}, HTTPClient: client})
			if err != nil {
				return nil, err
			}
			// The connection outlives the dial: its context is not ctx.
			return websocket.NetConn(context.Background(), c, websocket.MessageBinary), nil
		}
	case r.tls != nil:
		return func(ctx context.Context) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: connectTimeout}, Config: r.tls}
			return d.DialContext(ctx, "tcp", r.addr)
		}
	}
	return nil
}

// checkPlainRefused connects over plain TCP: the broker must not answer
// the CONNECT with a CONNACK, or TLS (or WebSocket) is not in force and
// the run proves nothing about it.
func (r *run) checkPlainRefused(ctx context.Context) error {
	c, err := mqtt.Connect(ctx, mqtt.Options{
		Addr: r.addr, Version: r.cfg.Version, ClientID: r.prefix + "-plain", CleanStart: true,
		ConnectTimeout: connectTimeout,
	})
	if err == nil {
		c.Close()
		return errors.New("crashtest: the broker took a plain-TCP MQTT client: TLS or WebSocket is not in force")
	}
	return nil
}
