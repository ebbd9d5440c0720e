package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/coder/websocket"

	mqtt "github.com/keelmq/keel/engine/client"
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
	tlsConfFile = "keel-tls.conf"
)

// writeTLSFiles makes the run's CA and server certificate in work and
// returns the client side's configuration.
func writeTLSFiles(work string) (*tls.Config, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "crashtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{tlsCAFile, "CERTIFICATE", caDER, 0o644},
		{tlsCertFile, "CERTIFICATE", der, 0o644},
		{tlsKeyFile, "PRIVATE KEY", keyDER, 0o600},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(work, f.name), b, f.mode); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, nil
}

// writeKeelListenerConf writes the configuration file that gives keel's
// default listener the run's certificate and/or WebSocket; --listen and
// --data come as flags.
func writeKeelListenerConf(work string, withTLS, ws bool) (string, error) {
	path := filepath.Join(work, tlsConfFile)
	conf := "# crashtest -tls / -ws (tools/crashtest/tls.go)\n"
	if withTLS {
		conf += fmt.Sprintf("certfile = %s\nkeyfile = %s\n", filepath.Join(work, tlsCertFile), filepath.Join(work, tlsKeyFile))
	}
	if ws {
		conf += "protocol = websockets\npath = /mqtt\n"
	}
	return path, os.WriteFile(path, []byte(conf), 0o644)
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
