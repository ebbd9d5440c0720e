package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/bridge"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener"
)

// bridgeConfig is one [bridge NAME] section: Mosquitto's bridge keys where
// the meaning is the same.
type bridgeConfig struct {
	bridge.Config

	section string            // "config FILE:LINE" of its [bridge NAME] line
	origin  map[string]string // key -> "config FILE:LINE"
	topicAt []string          // where each topic line is

	// TLS to the remote (bridge_*), read into Config.TLS by validate.
	caFile, caPath, certFile, keyFile string
	insecure                          bool
	tlsVersion                        uint16
}

var bridgeSectionRE = regexp.MustCompile(`^\[bridge ([A-Za-z0-9_.-]+)\]$`)

// bridgeSection starts a [bridge NAME] section if line is one (ok).
func (c *config) bridgeSection(line, at string) (b *bridgeConfig, ok bool, err error) {
	if !strings.HasPrefix(line, "[bridge ") {
		return nil, false, nil
	}
	m := bridgeSectionRE.FindStringSubmatch(line)
	if m == nil {
		return nil, true, fmt.Errorf("%s: want a section [bridge NAME] (NAME of letters, digits, '_', '.', '-'), got %q", at, line)
	}
	for _, o := range c.Bridges {
		if o.Name == m[1] {
			return nil, true, fmt.Errorf("%s: bridge %q is already defined at %s", at, m[1], strings.TrimPrefix(o.section, "config "))
		}
	}
	b = &bridgeConfig{section: at, origin: map[string]string{}}
	b.Name = m[1]
	b.TryPrivate = true // Mosquitto's default
	c.Bridges = append(c.Bridges, b)
	return b, true, nil
}

// bridgeKey is one key of a [bridge NAME] section.
type bridgeKey struct {
	name   string
	repeat bool // may appear on several lines (topic)
	set    func(b *bridgeConfig, val string) error
	get    func(b *bridgeConfig) string
}

// bridgeKeys are a bridge section's keys, in the order the README's table
// lists them (a test holds the two equal).
var bridgeKeys = []bridgeKey{
	{"address", false, func(b *bridgeConfig, v string) error {
		b.Addresses = nil
		for _, a := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			if !strings.Contains(a, ":") || strings.HasPrefix(a, "[") && !strings.Contains(a, "]:") {
				a = net.JoinHostPort(strings.Trim(a, "[]"), "1883") // Mosquitto's default port
			}
			host, port, err := net.SplitHostPort(a)
			if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
				return fmt.Errorf("want host:port[, host:port...], got %q", a)
			}
			b.Addresses = append(b.Addresses, a)
		}
		if len(b.Addresses) == 0 {
			return errors.New("want host:port[, host:port...]")
		}
		return nil
	}, func(b *bridgeConfig) string { return strings.Join(b.Addresses, ", ") }},
	{"topic", true, func(b *bridgeConfig, v string) error {
		t, err := bridge.ParseTopic(v)
		if err == nil {
			b.Topics = append(b.Topics, t)
		}
		return err
	}, nil},
	{"remote_clientid", false, func(b *bridgeConfig, v string) error {
		if v == "" || len(v) > 65535 {
			return errors.New("want a client id")
		}
		b.ClientID = v
		return nil
	}, func(b *bridgeConfig) string { return b.ClientID }},
	{"remote_username", false, func(b *bridgeConfig, v string) error { b.Username = v; return nil },
		func(b *bridgeConfig) string { return b.Username }},
	{"remote_password", false, func(b *bridgeConfig, v string) error { b.Password = []byte(v); return nil },
		func(b *bridgeConfig) string {
			if b.Password != nil {
				return "(set; not shown)"
			}
			return ""
		}},
	{"cleansession", false, func(b *bridgeConfig, v string) error { return parseBool(v, &b.CleanSession) },
		func(b *bridgeConfig) string { return fmtBool(b.CleanSession) }},
	{"bridge_protocol_version", false, func(b *bridgeConfig, v string) error {
		switch v {
		case "mqttv311":
			b.Version = packet.V311
		case "mqttv50":
			b.Version = packet.V5
		case "mqttv31":
			return errors.New("MQTT 3.1 is not supported for bridges: want mqttv311 or mqttv50")
		default:
			return fmt.Errorf("want mqttv311 or mqttv50, got %q", v)
		}
		return nil
	}, func(b *bridgeConfig) string {
		if b.Version == packet.V5 {
			return "mqttv50"
		}
		return "mqttv311"
	}},
	{"keepalive_interval", false, func(b *bridgeConfig, v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("want 1..65535 seconds, got %q", v)
		}
		b.KeepAlive = time.Duration(n) * time.Second
		return nil
	}, func(b *bridgeConfig) string {
		return strconv.Itoa(int(orDur(b.KeepAlive, 60*time.Second) / time.Second))
	}},
	{"restart_timeout", false, func(b *bridgeConfig, v string) error {
		f := strings.Fields(v)
		var secs []int
		for _, s := range f {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				secs = nil
				break
			}
			secs = append(secs, n)
		}
		switch {
		case len(secs) == 1 && len(f) == 1:
			b.RestartBase, b.RestartCap = time.Duration(secs[0])*time.Second, 0
		case len(secs) == 2 && len(f) == 2 && secs[1] >= secs[0]:
			b.RestartBase, b.RestartCap = time.Duration(secs[0])*time.Second, time.Duration(secs[1])*time.Second
		default:
			return fmt.Errorf("want BASE [CAP] in whole seconds, CAP not below BASE (5 30: from 5 s, doubling up to 30 s), got %q", v)
		}
		return nil
	}, func(b *bridgeConfig) string {
		if b.RestartBase == 0 {
			return "5 30"
		}
		if b.RestartCap == 0 {
			return strconv.Itoa(int(b.RestartBase / time.Second))
		}
		return fmt.Sprintf("%d %d", b.RestartBase/time.Second, b.RestartCap/time.Second)
	}},
	{"try_private", false, func(b *bridgeConfig, v string) error { return parseBool(v, &b.TryPrivate) },
		func(b *bridgeConfig) string { return fmtBool(b.TryPrivate) }},
	{"bridge_cafile", false, func(b *bridgeConfig, v string) error { b.caFile = v; return nil },
		func(b *bridgeConfig) string { return b.caFile }},
	{"bridge_capath", false, func(b *bridgeConfig, v string) error { b.caPath = v; return nil },
		func(b *bridgeConfig) string { return b.caPath }},
	{"bridge_certfile", false, func(b *bridgeConfig, v string) error { b.certFile = v; return nil },
		func(b *bridgeConfig) string { return b.certFile }},
	{"bridge_keyfile", false, func(b *bridgeConfig, v string) error { b.keyFile = v; return nil },
		func(b *bridgeConfig) string { return b.keyFile }},
	{"bridge_insecure", false, func(b *bridgeConfig, v string) error { return parseBool(v, &b.insecure) },
		func(b *bridgeConfig) string { return fmtBool(b.insecure) }},
	{"bridge_tls_version", false, func(b *bridgeConfig, v string) error {
		ver, err := listener.ParseTLSVersion(v)
		b.tlsVersion = ver
		return err
	}, func(b *bridgeConfig) string {
		if b.tlsVersion == tls.VersionTLS13 {
			return "tlsv1.3"
		}
		return "tlsv1.2"
	}},
}

// bridgeNotYet are Mosquitto bridge keys keel does not take (yet), with
// why.
var bridgeNotYet = map[string]string{}

func init() {
	for _, k := range []string{"bridge_alpn", "bridge_require_ocsp"} {
		bridgeNotYet[k] = "not supported yet for a bridge's TLS"
	}
	for _, k := range []string{"bridge_identity", "bridge_psk"} {
		bridgeNotYet[k] = "TLS-PSK is not supported (Go's crypto/tls has no pre-shared keys)"
	}
	for _, k := range []string{"local_clientid", "local_username", "local_password", "local_cleansession",
		"notifications", "notifications_local_only", "notification_topic", "round_robin", "start_type", "threshold",
		"idle_timeout", "bridge_attempt_unsubscribe", "bridge_bind_address", "bridge_max_packet_size",
		"bridge_outgoing_retain", "bridge_receive_maximum", "bridge_session_expiry_interval", "addresses", "connection"} {
		bridgeNotYet[k] = "a Mosquitto bridge option keel's bridge does not take (its local side is the session " + bridge.ClientIDPrefix + "NAME, always persistent, started at once)"
	}
}

// line reads one line of the section, as written: '#' starts a comment
// only at the start of a line (as in mosquitto.conf), since it is a
// wildcard in a topic line. An error never quotes a password.
func (b *bridgeConfig) line(line, at string) error {
	key, val, ok := strings.Cut(line, "=")
	if !ok {
		shown := strings.Fields(line)[0]
		return fmt.Errorf("%s: want key = value, got a line starting with %q in [bridge %s]", at, shown, b.Name)
	}
	key, val = strings.TrimSpace(key), strings.TrimSpace(val)
	for _, k := range bridgeKeys {
		if k.name != key {
			continue
		}
		if prev, set := b.origin[key]; set && !k.repeat {
			return fmt.Errorf("%s: key %q of [bridge %s]: already set at %s", at, key, b.Name, strings.TrimPrefix(prev, "config "))
		}
		if err := k.set(b, val); err != nil {
			return fmt.Errorf("%s: key %q of [bridge %s]: %w", at, key, b.Name, err)
		}
		b.origin[key] = at
		if key == "topic" {
			b.topicAt = append(b.topicAt, at)
		}
		return nil
	}
	if why, ok := bridgeNotYet[key]; ok {
		return fmt.Errorf("%s: key %q of [bridge %s]: %s", at, key, b.Name, why)
	}
	return fmt.Errorf("%s: key %q of [bridge %s]: unknown key", at, key, b.Name)
}

// loadTLS reads the bridge's TLS files into Config.TLS, as Mosquitto
// means them: TLS is on with bridge_cafile or bridge_capath (the CAs the
// remote's certificate is verified against); bridge_certfile and
// bridge_keyfile are the bridge's own certificate, for a remote that asks
// for one; bridge_insecure = true skips the check of the remote's host name
// in its certificate (the chain is still verified). A TLS key without a CA
// is refused: keel never falls back to plain TCP.
func (b *bridgeConfig) loadTLS() error {
	bad := func(key, format string, args ...any) error {
		at := b.origin[key]
		return fmt.Errorf("%s: key %q of [bridge %s]: %s", at, key, b.Name, fmt.Sprintf(format, args...))
	}
	if b.caFile == "" && b.caPath == "" {
		for _, k := range []string{"bridge_certfile", "bridge_keyfile", "bridge_insecure", "bridge_tls_version"} {
			if _, set := b.origin[k]; set {
				return bad(k, "TLS to the remote needs bridge_cafile or bridge_capath (the CAs its certificate is verified against); keel never falls back to plain TCP")
			}
		}
		return nil
	}
	pool := x509.NewCertPool()
	add := func(key, path string) error {
		pemBytes, err := os.ReadFile(path)
		if err != nil {
			return bad(key, "%v", err)
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return bad(key, "%s holds no PEM certificate", path)
		}
		return nil
	}
	if b.caFile != "" {
		if err := add("bridge_cafile", b.caFile); err != nil {
			return err
		}
	}
	if b.caPath != "" {
		ents, err := os.ReadDir(b.caPath)
		if err != nil {
			return bad("bridge_capath", "%v", err)
		}
		n := 0
		for _, e := range ents {
			if e.Type().IsRegular() {
				if err := add("bridge_capath", filepath.Join(b.caPath, e.Name())); err == nil {
					n++
				}
			}
		}
		if n == 0 {
			return bad("bridge_capath", "%s holds no PEM certificate", b.caPath)
		}
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: max(b.tlsVersion, tls.VersionTLS12)}
	if (b.certFile == "") != (b.keyFile == "") {
		k := "bridge_certfile"
		if b.certFile == "" {
			k = "bridge_keyfile"
		}
		return bad(k, "the bridge's certificate needs both bridge_certfile and bridge_keyfile")
	}
	if b.certFile != "" {
		cert, err := tls.LoadX509KeyPair(b.certFile, b.keyFile)
		if err != nil {
			return bad("bridge_certfile", "%s with %s: %v", b.certFile, b.keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if b.insecure {
		// The chain is verified, the host name is not (bridge_insecure).
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the remote sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	b.TLS = tc
	return nil
}

// validateBridges checks each bridge as a whole (bridge.Config.Validate)
// and reads its TLS files; an error names where the key at fault was set.
func (c *config) validateBridges() error {
	for _, b := range c.Bridges {
		if err := b.loadTLS(); err != nil {
			return err
		}
		cfg := b.Config // Validate fills in defaults: keep the file's values
		if err := cfg.Validate(); err != nil {
			var ce *bridge.ConfigError
			if !errors.As(err, &ce) {
				return fmt.Errorf("%s: [bridge %s]: %v", b.section, b.Name, err)
			}
			at := b.origin[ce.Key]
			if ce.Key == "topic" && ce.Line < len(b.topicAt) {
				at = b.topicAt[ce.Line]
			}
			if at == "" {
				return fmt.Errorf("%s: [bridge %s]: %s", b.section, b.Name, ce.Msg)
			}
			return fmt.Errorf("%s: key %q of [bridge %s]: %s", at, ce.Key, b.Name, ce.Msg)
		}
	}
	return nil
}

// effectiveBridges prints each bridge as a section, defaults included; a
// password is never shown.
func (c *config) effectiveBridges(w *strings.Builder) {
	for _, b := range c.Bridges {
		fmt.Fprintf(w, "\n[bridge %s]\n", b.Name)
		for _, k := range bridgeKeys {
			if k.name == "topic" {
				for _, t := range b.Topics {
					fmt.Fprintf(w, "topic = %s\n", t)
				}
				continue
			}
			v := k.get(b)
			if k.name == "remote_clientid" && v == "" {
				v = "HOSTNAME." + b.Name
			}
			if v == "" {
				fmt.Fprintf(w, "# %s: none\n", k.name)
			} else {
				fmt.Fprintf(w, "%s = %s\n", k.name, v)
			}
		}
	}
}

// bridgesChanged names the [bridge NAME] sections that a and b do not
// have alike (added, removed, or any key changed, the password included):
// bridges are started once, so a reload (SIGHUP) applies none of it and
// says so; the change takes effect at the next start.
func bridgesChanged(a, b *config) []string {
	text := func(c *config) map[string]string {
		m := map[string]string{}
		for _, bc := range c.Bridges {
			one := &config{Bridges: []*bridgeConfig{bc}}
			var w strings.Builder
			one.effectiveBridges(&w)
			m[bc.Name] = w.String() + "\x00" + string(bc.Password)
		}
		return m
	}
	ta, tb := text(a), text(b)
	var out []string
	for _, bc := range a.Bridges {
		if v, ok := tb[bc.Name]; !ok || v != ta[bc.Name] {
			out = append(out, "[bridge "+bc.Name+"]")
		}
	}
	for _, bc := range b.Bridges {
		if _, ok := ta[bc.Name]; !ok {
			out = append(out, "[bridge "+bc.Name+"]")
		}
	}
	return out
}

// startBridges starts every configured bridge on b.
func startBridges(cfg *config, b *engine.Broker, logger *slog.Logger) ([]*bridge.Bridge, error) {
	var out []*bridge.Bridge
	for _, bc := range cfg.Bridges {
		c := bc.Config
		c.Logger = logger
		c.LocalReceiveMaximum = cfg.Engine.ReceiveMaximum
		c.SysInterval = cfg.Engine.SysInterval // $SYS/broker/bridges/NAME/...: with the broker's own
		br, err := bridge.New(c, b)
		if err != nil {
			stopBridges(out)
			return nil, fmt.Errorf("%s: [bridge %s]: %v", bc.section, bc.Name, err)
		}
		br.Start()
		logger.Info("bridge started", "bridge", bc.Name, "address", strings.Join(c.Addresses, ","), "topics", len(c.Topics))
		out = append(out, br)
	}
	return out, nil
}

// stopBridges disconnects every bridge (both sessions are kept).
func stopBridges(bs []*bridge.Bridge) {
	for _, b := range bs {
		b.Close()
	}
}

// bridgeAuthn lets the bridges' own local connections in (they come from
// the process, over a pipe, on the listener no configuration can name) and
// keeps their client ids from everyone else.
type bridgeAuthn struct{ *brokerAuth }

func (a bridgeAuthn) Authenticate(ctx context.Context, req auth.Request) (auth.Identity, packet.ReasonCode) {
	if req.Listener == bridge.Listener {
		return auth.Identity{Username: req.ClientID}, packet.CodeSuccess
	}
	if bridge.Reserved(req.ClientID) {
		// 0x87 rather than 0x85: the engine maps it to 3.1.1's return
		// code 5 (not authorized) too.
		return auth.Identity{}, packet.CodeNotAuthorized
	}
	return a.brokerAuth.Authenticate(ctx, req)
}

func (a bridgeAuthn) Recheck(id auth.Identity, listener string) bool {
	return listener == bridge.Listener || a.brokerAuth.Recheck(id, listener)
}

func (a bridgeAuthn) StartAuth(req auth.Request, method string) (auth.Exchange, packet.ReasonCode) {
	if req.Listener == bridge.Listener || bridge.Reserved(req.ClientID) {
		return nil, packet.CodeNotAuthorized
	}
	return a.brokerAuth.StartAuth(req, method)
}

// bridgeACL lets a bridge publish and read what its topics say, whatever
// the ACL file says of other clients (as Mosquitto's bridges), except
// publish to $SYS, which no client may. Only a bridge has a
// "$bridge/..." client id (bridgeAuthn).
type bridgeACL struct{ auth.Authorizer }

func (a bridgeACL) Allow(id auth.Identity, clientID, topic string, access auth.Access) bool {
	if bridge.Reserved(clientID) {
		return access != auth.Write || !strings.HasPrefix(topic, "$SYS")
	}
	return a.Authorizer.Allow(id, clientID, topic, access)
}
