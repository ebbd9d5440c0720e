package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/listener"
)

// config is keel's configuration: flags and an optional config file of
// "key = value" lines ('#' starts a comment) in which "[listener NAME]"
// starts a section of listener keys. Defaults and validation live here, in
// one place: defaultConfig, defaultListener, configKeys, listenerKeys and
// validate.
type config struct {
	Data              string
	Admin             string // the admin listener (admin.go); Metrics is its old name
	AdminTokenFile    string
	Metrics           string
	Pprof             bool
	LogLevel          slog.Level
	LogJSON           bool // log_format = json
	CompressThreshold int
	MaxConnections    int // all listeners together; 0: no limit
	Conn              connLimits
	PasswordFile      string
	ACLFile           string
	// MaxVerifications is auth.LimiterOptions.Concurrent: password
	// verifications running at once; 0: the Limiter's default (half of
	// GOMAXPROCS, at least 1).
	MaxVerifications int
	Engine           engine.Options
	Disk             diskMark // min_free_disk (disk.go)

	// Default is the listener the top-level listener keys (and the
	// --listen flag) configure. It runs unless the file names listeners of
	// its own and the top level sets none of its keys.
	Default listenerConfig
	Named   []*listenerConfig // [listener NAME] sections, in file order
	Bridges []*bridgeConfig   // [bridge NAME] sections, in file order (bridge.go)
	Quotas  []*quotaConfig    // [quota NAME] sections, in file order (quotasection.go)

	// origin says where each top-level key was set ("config FILE:LINE" or
	// "flag --NAME"), for errors found after parsing.
	origin map[string]string
}

// listenerConfig is one listener: the default one or a [listener NAME]
// section.
type listenerConfig struct {
	Name             string
	Listen           string
	Protocol         string // mqtt or websockets
	TLS              listener.TLSFiles
	UseIdentity      bool // use_identity_as_username: the certificate's CN
	UseSubject       bool // use_subject_as_username: its RFC 2253 subject
	Path             string
	Origins          []string
	Proxy            string // off, v1, v2 or any
	ProxyTrusted     []netip.Prefix
	MaxConnections   int
	AllowAnonymous   bool
	HandshakeTimeout time.Duration

	section string            // "config FILE:LINE" of its [listener NAME] line; "" for the default
	origin  map[string]string // as config.origin, for this listener's keys
}

func defaultConfig() config {
	return config{Data: "./keel-data", LogLevel: slog.LevelInfo, Default: defaultListener("default")}
}

func defaultListener(name string) listenerConfig {
	return listenerConfig{Name: name, Listen: "127.0.0.1:1883", Protocol: "mqtt", Path: "/mqtt",
		Proxy: "off", HandshakeTimeout: 10 * time.Second}
}

// key is one config key: set parses a value, get prints the effective one.
type key[T any] struct {
	name string
	set  func(c *T, val string) error
	get  func(c *T) string
}

// configKeys are the top-level keys, in the order the README's table and
// keel.conf.example list them (a test holds all three equal).
var configKeys = append([]key[config]{
	{"data", func(c *config, v string) error { c.Data = v; return nil }, func(c *config) string { return c.Data }},
	{"admin", func(c *config, v string) error { c.Admin = v; return nil }, func(c *config) string { return c.Admin }},
	{"admin_token_file", func(c *config, v string) error { c.AdminTokenFile = v; return nil }, func(c *config) string { return c.AdminTokenFile }},
	{"metrics", func(c *config, v string) error { c.Metrics = v; return nil }, func(c *config) string { return c.Metrics }},
	{"pprof", func(c *config, v string) error { return parseBool(v, &c.Pprof) }, func(c *config) string { return fmtBool(c.Pprof) }},
	{"log_level", func(c *config, v string) error {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("want debug, info, warn or error, got %q", v)
		}
		return nil
	}, func(c *config) string { return strings.ToLower(c.LogLevel.String()) }},
	{"log_format", func(c *config, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("want text or json, got %q", v)
		}
		c.LogJSON = v == "json"
		return nil
	}, func(c *config) string {
		if c.LogJSON {
			return "json"
		}
		return "text"
	}},
	{"max_connections", func(c *config, v string) error { return parseCount(v, &c.MaxConnections) },
		func(c *config) string { return strconv.Itoa(c.MaxConnections) }},
	{"password_file", func(c *config, v string) error { c.PasswordFile = v; return nil }, func(c *config) string { return c.PasswordFile }},
	{"acl_file", func(c *config, v string) error { c.ACLFile = v; return nil }, func(c *config) string { return c.ACLFile }},
	{"max_password_verifications", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("want a number of verifications at once (0: half the CPUs keel may use, at least 1), got %q", v)
		}
		c.MaxVerifications = int(n)
		return nil
	}, func(c *config) string { return strconv.Itoa(c.MaxVerifications) }},
	{"max_packet_size", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 16 || n > 268435455 {
			return fmt.Errorf("want 16..268435455 bytes, got %q", v)
		}
		c.Engine.MaxPacketSize = uint32(n)
		return nil
	}, func(c *config) string {
		return strconv.FormatUint(uint64(orU32(c.Engine.MaxPacketSize, 268435455)), 10)
	}},
	{"max_keepalive", func(c *config, v string) error {
		// 0 is mosquitto.conf's "no limit"; the engine's is negative.
		var n uint16
		if err := parseU16(v, &n); err != nil {
			return err
		}
		c.Engine.MaxKeepAlive = int(n)
		if n == 0 {
			c.Engine.MaxKeepAlive = -1
		}
		return nil
	}, func(c *config) string {
		if c.Engine.MaxKeepAlive < 0 {
			return "0"
		}
		return strconv.Itoa(orInt(c.Engine.MaxKeepAlive, 65535))
	}},
	{"receive_maximum", func(c *config, v string) error { return parseU16(v, &c.Engine.ReceiveMaximum) },
		func(c *config) string { return strconv.Itoa(int(orU16(c.Engine.ReceiveMaximum, 65535))) }},
	{"max_inflight", func(c *config, v string) error { return parseU16(v, &c.Engine.MaxInflight) },
		func(c *config) string { return strconv.Itoa(int(orU16(c.Engine.MaxInflight, 1024))) }},
	{"topic_alias_maximum", func(c *config, v string) error { return parseU16(v, &c.Engine.TopicAliasMaximum) },
		func(c *config) string { return strconv.Itoa(int(orU16(c.Engine.TopicAliasMaximum, 100))) }},
	{"server_topic_aliases", func(c *config, v string) error {
		var on bool
		if err := parseBool(v, &on); err != nil {
			return err
		}
		c.Engine.NoServerTopicAliases = !on
		return nil
	}, func(c *config) string { return fmtBool(!c.Engine.NoServerTopicAliases) }},
	{"queue_qos0", func(c *config, v string) error { return parseBool(v, &c.Engine.QueueQoS0) },
		func(c *config) string { return fmtBool(c.Engine.QueueQoS0) }},
	{"sync_completions", func(c *config, v string) error { return parseBool(v, &c.Engine.SyncCompletions) },
		func(c *config) string { return fmtBool(c.Engine.SyncCompletions) }},
	{"completion_hold", func(c *config, v string) error {
		return parseDuration(v, "10ms (negative: no hold)", &c.Engine.CompletionHold)
	}, func(c *config) string { return orDur(c.Engine.CompletionHold, 10*time.Millisecond).String() }},
	{"compress_threshold", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a number of bytes, got %q", v)
		}
		c.CompressThreshold = n
		return nil
	}, func(c *config) string { return strconv.Itoa(orInt(c.CompressThreshold, 1024)) }},
	{"dedup_window", func(c *config, v string) error {
		return parseDuration(v, "10m (negative: off)", &c.Engine.DedupWindow)
	}, func(c *config) string { return orDur(c.Engine.DedupWindow, 10*time.Minute).String() }},
	{"dedup_property", func(c *config, v string) error {
		if v == "" {
			return errors.New("want a user property name")
		}
		c.Engine.DedupProperty = v
		return nil
	}, func(c *config) string { return orStr(c.Engine.DedupProperty, "msg-id") }},
	{"dedup_max_ids", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil || n == 0 {
			return fmt.Errorf("want a number of ids per publisher, at least 1, got %q", v)
		}
		c.Engine.DedupMaxIDs = int(n)
		return nil
	}, func(c *config) string { return strconv.Itoa(orInt(c.Engine.DedupMaxIDs, 100_000)) }},
	{"dedup_scope", func(c *config, v string) error {
		if v != "client" && v != "username" {
			return fmt.Errorf("want client or username, got %q", v)
		}
		c.Engine.DedupByUsername = v == "username"
		return nil
	}, func(c *config) string {
		if c.Engine.DedupByUsername {
			return "username"
		}
		return "client"
	}},
	{"sys_interval", func(c *config, v string) error {
		return parseDuration(v, "10s (negative: off)", &c.Engine.SysInterval)
	}, func(c *config) string { return orDur(c.Engine.SysInterval, 10*time.Second).String() }},
}, slices.Concat(quotaKeys, limitKeys, diskKeys, retainKeys)...) // the quotas' keys follow (quotas.go, limitkeys.go, disk.go, retainlimits.go)

// listenerKeys are the keys of a [listener NAME] section; at the top level
// they configure the default listener (max_connections there is the
// global limit). The README's listener table and keel.conf.example list
// them in this order.
var listenerKeys = []key[listenerConfig]{
	{"listen", func(l *listenerConfig, v string) error { l.Listen = v; return nil }, func(l *listenerConfig) string { return l.Listen }},
	{"protocol", func(l *listenerConfig, v string) error {
		if v != "mqtt" && v != "websockets" {
			return fmt.Errorf("want mqtt or websockets, got %q", v)
		}
		l.Protocol = v
		return nil
	}, func(l *listenerConfig) string { return l.Protocol }},
	{"certfile", func(l *listenerConfig, v string) error { l.TLS.CertFile = v; return nil }, func(l *listenerConfig) string { return l.TLS.CertFile }},
	{"keyfile", func(l *listenerConfig, v string) error { l.TLS.KeyFile = v; return nil }, func(l *listenerConfig) string { return l.TLS.KeyFile }},
	{"cafile", func(l *listenerConfig, v string) error { l.TLS.CAFile = v; return nil }, func(l *listenerConfig) string { return l.TLS.CAFile }},
	{"capath", func(l *listenerConfig, v string) error { l.TLS.CAPath = v; return nil }, func(l *listenerConfig) string { return l.TLS.CAPath }},
	{"crlfile", func(l *listenerConfig, v string) error { l.TLS.CRLFile = v; return nil }, func(l *listenerConfig) string { return l.TLS.CRLFile }},
	{"require_certificate", func(l *listenerConfig, v string) error { return parseBool(v, &l.TLS.RequireCertificate) },
		func(l *listenerConfig) string { return fmtBool(l.TLS.RequireCertificate) }},
	{"use_identity_as_username", func(l *listenerConfig, v string) error { return parseBool(v, &l.UseIdentity) },
		func(l *listenerConfig) string { return fmtBool(l.UseIdentity) }},
	{"use_subject_as_username", func(l *listenerConfig, v string) error { return parseBool(v, &l.UseSubject) },
		func(l *listenerConfig) string { return fmtBool(l.UseSubject) }},
	{"tls_version", func(l *listenerConfig, v string) error {
		ver, err := listener.ParseTLSVersion(v)
		l.TLS.MinVersion = ver
		return err
	}, func(l *listenerConfig) string {
		if l.TLS.MinVersion == tls.VersionTLS13 {
			return "tlsv1.3"
		}
		return "tlsv1.2"
	}},
	{"ciphers", func(l *listenerConfig, v string) error {
		cs, err := listener.ParseCiphers(v)
		l.TLS.CipherSuites = cs
		return err
	}, func(l *listenerConfig) string {
		var names []string
		for _, id := range l.TLS.CipherSuites {
			names = append(names, tls.CipherSuiteName(id))
		}
		return strings.Join(names, ":")
	}},
	{"path", func(l *listenerConfig, v string) error {
		if !strings.HasPrefix(v, "/") {
			return fmt.Errorf("want a URL path starting with /, got %q", v)
		}
		l.Path = v
		return nil
	}, func(l *listenerConfig) string { return l.Path }},
	{"websockets_origin", func(l *listenerConfig, v string) error {
		l.Origins = splitList(v)
		return nil
	}, func(l *listenerConfig) string { return strings.Join(l.Origins, ",") }},
	{"proxy_protocol", func(l *listenerConfig, v string) error {
		if _, err := listener.ParseProxy(v); err != nil {
			return err
		}
		l.Proxy = v
		return nil
	}, func(l *listenerConfig) string { return l.Proxy }},
	{"proxy_trusted", func(l *listenerConfig, v string) error {
		l.ProxyTrusted = nil
		for _, s := range splitList(v) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return fmt.Errorf("want CIDR prefixes or addresses separated by commas, got %q", s)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			l.ProxyTrusted = append(l.ProxyTrusted, p.Masked())
		}
		return nil
	}, func(l *listenerConfig) string {
		var s []string
		for _, p := range l.ProxyTrusted {
			s = append(s, p.String())
		}
		return strings.Join(s, ",")
	}},
	{"max_connections", func(l *listenerConfig, v string) error { return parseCount(v, &l.MaxConnections) },
		func(l *listenerConfig) string { return strconv.Itoa(l.MaxConnections) }},
	{"allow_anonymous", func(l *listenerConfig, v string) error { return parseBool(v, &l.AllowAnonymous) },
		func(l *listenerConfig) string { return fmtBool(l.AllowAnonymous) }},
	{"handshake_timeout", func(l *listenerConfig, v string) error {
		if err := parseDuration(v, "10s", &l.HandshakeTimeout); err != nil {
			return err
		}
		if l.HandshakeTimeout <= 0 {
			return fmt.Errorf("want a positive duration, got %q", v)
		}
		return nil
	}, func(l *listenerConfig) string { return l.HandshakeTimeout.String() }},
}

// unsupportedKeys are mosquitto.conf options keel knows and cannot honour.
var unsupportedKeys = map[string]string{
	"psk_hint":       "TLS-PSK is not supported (Go's crypto/tls has no pre-shared keys)",
	"psk_file":       "TLS-PSK is not supported (Go's crypto/tls has no pre-shared keys)",
	"ciphers_tls1.3": "Go's crypto/tls does not let the TLS 1.3 cipher suites be chosen",
	"dhparamfile":    "Go's crypto/tls has no finite-field Diffie-Hellman: its key exchanges are ECDHE",
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func orU32(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

func orU16(v, d uint16) uint16 {
	if v == 0 {
		return d
	}
	return v
}

func orInt(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func orStr(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func orDur(v, d time.Duration) time.Duration {
	if v == 0 {
		return d
	}
	return v
}

func fmtBool(b bool) string { return strconv.FormatBool(b) }

func parseU16(val string, dst *uint16) error {
	v, err := strconv.ParseUint(val, 10, 16)
	if err != nil {
		return fmt.Errorf("want a number 0..65535, got %q", val)
	}
	*dst = uint16(v)
	return nil
}

func parseCount(val string, dst *int) error {
	v, err := strconv.ParseUint(val, 10, 31)
	if err != nil {
		return fmt.Errorf("want a number of connections (0: no limit), got %q", val)
	}
	*dst = int(v)
	return nil
}

func parseDuration(val, example string, dst *time.Duration) error {
	d, err := time.ParseDuration(val)
	if err != nil {
		return fmt.Errorf("want a duration like %s, got %q", example, val)
	}
	*dst = d
	return nil
}

func parseBool(val string, dst *bool) error {
	v, err := strconv.ParseBool(val)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", val)
	}
	*dst = v
	return nil
}

var sectionRE = regexp.MustCompile(`^\[listener ([A-Za-z0-9_.-]+)\]$`)

// load reads a config file; an error names the file, the line and the key.
func (c *config) load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	var sec *listenerConfig // the section being read; nil: the top level
	var bsec *bridgeConfig  // the [bridge NAME] section being read, if any
	var qsec *quotaConfig   // the [quota NAME] section being read, if any
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		raw := strings.TrimSpace(sc.Text()) // a bridge section's, whose '#' is a wildcard but at the start
		line := raw
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		at := fmt.Sprintf("config %s:%d", path, n)
		if strings.HasPrefix(line, "[") {
			if q, ok, err := c.quotaSection(line, at); ok {
				if err != nil {
					return err
				}
				qsec, bsec, sec = q, nil, nil
				continue
			}
			qsec = nil
			if b, ok, err := c.bridgeSection(line, at); ok {
				if err != nil {
					return err
				}
				bsec, sec = b, nil
				continue
			}
			bsec = nil
			m := sectionRE.FindStringSubmatch(line)
			if m == nil {
				return fmt.Errorf("%s: want a section [listener NAME] or [bridge NAME] or [quota NAME] (NAME of letters, digits, '_', '.', '-'), got %q", at, line)
			}
			if m[1] == c.Default.Name {
				return fmt.Errorf("%s: listener name %q is the top-level listener's; choose another", at, m[1])
			}
			for _, l := range c.Named {
				if l.Name == m[1] {
					return fmt.Errorf("%s: listener %q is already defined at %s", at, m[1], strings.TrimPrefix(l.section, "config "))
				}
			}
			l := defaultListener(m[1])
			l.section = at
			sec = &l
			c.Named = append(c.Named, sec)
			continue
		}
		if qsec != nil {
			if err := qsec.line(line, at); err != nil {
				return err
			}
			continue
		}
		if bsec != nil {
			if err := bsec.line(raw, at); err != nil {
				return err
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("%s: want key = value, got %q", at, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if sec == nil {
			err = c.set(key, val, at)
		} else {
			err = sec.set(key, val, at)
		}
		if err != nil {
			return fmt.Errorf("%s: key %q: %w", at, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// set sets a top-level key to val; origin says where, for later errors.
func (c *config) set(name, val, origin string) error {
	if found, err := setKey(configKeys, c, name, val); found {
		if err == nil {
			c.origin = setOrigin(c.origin, name, origin)
		}
		return err
	}
	return c.Default.set(name, val, origin)
}

// set sets a listener key to val.
func (l *listenerConfig) set(name, val, origin string) error {
	found, err := setKey(listenerKeys, l, name, val)
	if found {
		if err == nil {
			l.origin = setOrigin(l.origin, name, origin)
		}
		return err
	}
	if why, ok := unsupportedKeys[name]; ok {
		return errors.New(why)
	}
	if l.section != "" {
		if found, _ := setKey(configKeys, &config{}, name, "x"); found {
			return fmt.Errorf("is a top-level key, not a listener's: move it above the first [listener] section")
		}
	}
	return errors.New("unknown key")
}

func setKey[T any](keys []key[T], c *T, name, val string) (found bool, err error) {
	for _, k := range keys {
		if k.name == name {
			return true, k.set(c, val)
		}
	}
	return false, nil
}

func setOrigin(m map[string]string, key, origin string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[key] = origin
	return m
}

// listeners are the listeners keel runs: the default one unless the file
// names its own and sets none of the default's keys, then the named ones.
func (c *config) listeners() []*listenerConfig {
	var out []*listenerConfig
	if len(c.Named) == 0 || len(c.Default.origin) > 0 {
		out = append(out, &c.Default)
	}
	return append(out, c.Named...)
}

// validate checks what no single key can: the configuration as a whole,
// each listener's TLS files included (read, and the key held to its
// certificate). An error names where the key was set.
func (c *config) validate() error {
	if err := c.validateAdmin(); err != nil { // admin.go
		return err
	}
	if c.Data == "" {
		return fmt.Errorf("%s: want a directory, got nothing", c.where("data"))
	}
	if c.Pprof && c.adminAddr() == "" {
		return fmt.Errorf("%s: /debug/pprof/ is served on the admin address: set admin too", c.where("pprof"))
	}
	for _, l := range c.listeners() {
		if err := l.validate(c); err != nil {
			return err
		}
	}
	if c.PasswordFile != "" {
		if _, err := auth.LoadPasswords(c.PasswordFile); err != nil {
			return fmt.Errorf("%s: %v", c.where("password_file"), err)
		}
	}
	if c.ACLFile != "" {
		if _, err := auth.LoadACL(c.ACLFile); err != nil {
			return fmt.Errorf("%s: %v", c.where("acl_file"), err)
		}
	}
	if err := c.validateQuotas(); err != nil { // quotasection.go
		return err
	}
	return c.validateBridges()
}

// adminToken reads admin_token_file: the token is its first line, at
// least 16 bytes; nil without the key.
func (c *config) adminToken() ([]byte, error) {
	if c.AdminTokenFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.AdminTokenFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", c.where("admin_token_file"), err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	if len(tok) < 16 {
		return nil, fmt.Errorf("%s: the token in %s is %d bytes; want at least 16 (e.g. openssl rand -hex 32 > FILE)", c.where("admin_token_file"), c.AdminTokenFile, len(tok))
	}
	return []byte(tok), nil
}

// anonymous is whether l lets in clients without a username: its own
// allow_anonymous if set, else the top level's (as Mosquitto's global
// setting), else true only on a loopback listener with no authentication
// configured (no password_file, no certificate identity): Mosquitto 2's
// defaults, and nothing other hosts reach is open unless the operator
// says so.
func (c *config) anonymous(l *listenerConfig) bool {
	if _, set := l.origin["allow_anonymous"]; set {
		return l.AllowAnonymous
	}
	if _, set := c.Default.origin["allow_anonymous"]; set {
		return c.Default.AllowAnonymous
	}
	host, _, _ := net.SplitHostPort(l.Listen)
	return isLoopback(host) && c.PasswordFile == "" && !l.UseIdentity && !l.UseSubject
}

// authenticated is whether l's clients must prove who they are: a
// password file, a client certificate required by TLS, or the
// certificate as the username.
func (c *config) authenticated(l *listenerConfig) bool {
	return c.PasswordFile != "" || l.TLS.RequireCertificate || l.UseIdentity || l.UseSubject
}

// validate checks one listener. It never lets a TLS key be ignored: a
// listener that names any TLS material has certfile and keyfile, or it is
// refused, rather than served as plain TCP.
func (l *listenerConfig) validate(c *config) error {
	host, _, err := net.SplitHostPort(l.Listen)
	if err != nil {
		return fmt.Errorf("%s: want HOST:PORT, got %q", l.where("listen"), l.Listen)
	}
	if !isLoopback(host) && !c.authenticated(l) && !c.anonymous(l) {
		return fmt.Errorf("%s: %s is reachable from other hosts and no authentication is configured for it: set password_file (or client certificates: require_certificate), or allow_anonymous = true to serve it anonymously", l.where("listen"), l.Listen)
	}
	if l.TLS.CertFile == "" || l.TLS.KeyFile == "" {
		// A TLS key that asks for anything, without the server's
		// certificate and key, is refused.
		asks := []struct {
			key string
			set bool
		}{
			{"certfile", l.TLS.CertFile != ""}, {"keyfile", l.TLS.KeyFile != ""},
			{"cafile", l.TLS.CAFile != ""}, {"capath", l.TLS.CAPath != ""}, {"crlfile", l.TLS.CRLFile != ""},
			{"require_certificate", l.TLS.RequireCertificate},
			{"use_identity_as_username", l.UseIdentity}, {"use_subject_as_username", l.UseSubject},
			{"tls_version", l.TLS.MinVersion > tls.VersionTLS12}, {"ciphers", l.TLS.CipherSuites != nil},
		}
		for _, a := range asks {
			if a.set {
				return fmt.Errorf("%s: TLS needs both certfile and keyfile on this listener (keel never falls back to plain TCP)", l.where(a.key))
			}
		}
	}
	if l.UseIdentity && l.UseSubject {
		return fmt.Errorf("%s: use_identity_as_username and use_subject_as_username exclude each other", l.where("use_subject_as_username"))
	}
	for _, k := range []string{"use_identity_as_username", "use_subject_as_username"} {
		if on := (k == "use_identity_as_username" && l.UseIdentity) || (k == "use_subject_as_username" && l.UseSubject); on && !l.TLS.RequireCertificate {
			return fmt.Errorf("%s: needs require_certificate = true (the username comes from the client's certificate)", l.where(k))
		}
	}
	if l.Protocol != "websockets" {
		for _, k := range []string{"path", "websockets_origin"} {
			if _, set := l.origin[k]; set {
				return fmt.Errorf("%s: is a WebSocket key: set protocol = websockets on this listener", l.where(k))
			}
		}
	}
	if l.Proxy == "off" && len(l.ProxyTrusted) > 0 {
		return fmt.Errorf("%s: set proxy_protocol (v1, v2 or any) too", l.where("proxy_trusted"))
	}
	if l.Proxy != "off" && len(l.ProxyTrusted) == 0 {
		return fmt.Errorf("%s: PROXY headers are taken only from proxy_trusted peers: set proxy_trusted = CIDR,...", l.where("proxy_protocol"))
	}
	if l.TLS.CertFile != "" {
		if _, err := listener.LoadTLS(l.TLS); err != nil {
			var fe *listener.FileError
			if errors.As(err, &fe) {
				return fmt.Errorf("%s: %v", l.where(fe.Key), fe)
			}
			return fmt.Errorf("%s: %v", l.where("certfile"), err)
		}
	}
	return nil
}

// isLoopback says whether host reaches only this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// where names the origin of key for an error: `config FILE:LINE: key "k"`,
// `flag --k`, or `key "k"` for a default.
func (c *config) where(key string) string { return where(c.origin, key, "") }

func (l *listenerConfig) where(key string) string {
	in := ""
	if l.section != "" {
		in = fmt.Sprintf(" of [listener %s] (%s)", l.Name, strings.TrimPrefix(l.section, "config "))
	}
	return where(l.origin, key, in)
}

func where(origin map[string]string, key, in string) string {
	o, ok := origin[key]
	switch {
	case !ok:
		return fmt.Sprintf("key %q%s", key, in)
	case strings.HasPrefix(o, "flag "):
		return o
	}
	return fmt.Sprintf("%s: key %q", o, key)
}

// effective prints the configuration keel would run, defaults included:
// the top-level keys, then each listener as a section.
func (c *config) effective() string {
	var b strings.Builder
	line := func(name, val string) {
		if val == "" {
			fmt.Fprintf(&b, "# %s: none\n", name)
		} else {
			fmt.Fprintf(&b, "%s = %s\n", name, val)
		}
	}
	for _, k := range configKeys {
		line(k.name, k.get(c))
	}
	for _, l := range c.listeners() {
		if l.section == "" {
			fmt.Fprintf(&b, "\n# [listener %s]: the top-level listener keys\n", l.Name)
		} else {
			fmt.Fprintf(&b, "\n[listener %s]\n", l.Name)
		}
		for _, k := range listenerKeys {
			if l.section == "" && k.name == "max_connections" {
				continue // at the top level, the key is the global one
			}
			line(k.name, k.get(l))
		}
	}
	c.effectiveBridges(&b)
	c.effectiveQuotas(&b)
	return b.String()
}
