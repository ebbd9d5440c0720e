package main

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keelmq/keel/listener/listenertest"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keel.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigLoads(t *testing.T) {
	p := writeConfig(t, "# a comment\nlisten = 127.0.0.1:1999\n\ndata = /var/lib/keel  # trailing comment\nmax_inflight = 32\nqueue_qos0 = true\nsync_completions = true\ncompletion_hold = 2ms\nsys_interval = 5s\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if c.Default.Listen != "127.0.0.1:1999" || c.Data != "/var/lib/keel" || c.Engine.MaxInflight != 32 ||
		!c.Engine.QueueQoS0 || !c.Engine.SyncCompletions || c.Engine.SysInterval.Seconds() != 5 ||
		c.Engine.CompletionHold != 2*time.Millisecond {
		t.Fatalf("got %+v", c)
	}
}

// A bad config file is refused with the file, the line and the key.
func TestConfigErrorsNameLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"listen = :1\nmax_inflght = 3\n", `:2: key "max_inflght": unknown key`},
		{"\n\nmax_inflight = lots\n", `:3: key "max_inflight": want a number 0..65535, got "lots"`},
		{"queue_qos0 = maybe\n", `:1: key "queue_qos0": want true or false`},
		{"data /tmp\n", `:1: want key = value`},
		{"max_packet_size = 3\n", `:1: key "max_packet_size"`},
	} {
		p := writeConfig(t, tc.text)
		c := defaultConfig()
		err := c.load(p)
		if err == nil || !strings.Contains(err.Error(), p+tc.want) {
			t.Errorf("config %q: got error %v, want it to contain %q", tc.text, err, p+tc.want)
		}
	}
}

// keyNames are the names of keys, in order.
func keyNames[T any](keys []key[T]) []string {
	var names []string
	for _, k := range keys {
		names = append(names, k.name)
	}
	return names
}

// readmeConfigTable returns a README table of keys (the one after the
// marker "config-keys" or "listener-keys"): key -> default, and the keys
// in order.
func readmeConfigTable(t *testing.T, marker string) (map[string]string, []string) {
	t.Helper()
	rows := readmeSection(t, marker, func(l string) bool { return !strings.HasPrefix(l, "|") })
	if len(rows) < 3 || rows[0] != "| key | default | what it does |" {
		t.Fatalf("README.md: the %s marker is not followed by the key | default | what it does table: %q", marker, rows)
	}
	defaults := map[string]string{}
	var keys []string
	for _, r := range rows[2:] {
		cells := strings.Split(strings.Trim(r, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("README.md config table: row %q does not have 3 cells", r)
		}
		key := strings.Trim(strings.TrimSpace(cells[0]), "`")
		keys = append(keys, key)
		defaults[key] = strings.Trim(strings.TrimSpace(cells[1]), "`")
	}
	return defaults, keys
}

// The README's tables list exactly the keys the parser knows, in its order.
func TestReadmeConfigTableMatchesParser(t *testing.T) {
	_, keys := readmeConfigTable(t, "config-keys")
	if want := keyNames(configKeys); !slices.Equal(keys, want) {
		t.Errorf("README.md config table lists\n  %v\nthe parser knows\n  %v", keys, want)
	}
	_, keys = readmeConfigTable(t, "listener-keys")
	if want := keyNames(listenerKeys); !slices.Equal(keys, want) {
		t.Errorf("README.md listener table lists\n  %v\nthe parser knows\n  %v", keys, want)
	}
}

// keel.conf.example names every key, with the README's default for each
// key it sets, and keel config check accepts it.
func TestConfigExample(t *testing.T) {
	const example = "keel.conf.example"
	code, out, errOut := runIn("config", "check", example)
	if code != 0 || !strings.HasPrefix(out, example+": ok\n") {
		t.Fatalf("keel config check %s: exit %d, stdout %q, stderr %q; want 0 and ok", example, code, out, errOut)
	}
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	defaults, _ := readmeConfigTable(t, "config-keys")
	ldefaults, _ := readmeConfigTable(t, "listener-keys")
	for k, v := range ldefaults {
		if _, global := defaults[k]; !global {
			defaults[k] = v
		}
	}
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		l, commented := strings.CutPrefix(l, "# ")
		key, val, ok := strings.Cut(l, " = ")
		if !ok || strings.ContainsAny(key, " #") {
			continue // prose
		}
		keys = append(keys, key)
		if !commented && val != defaults[key] {
			t.Errorf("%s: %s = %s, the README's default is %q", example, key, val, defaults[key])
		}
	}
	if want := append(keyNames(configKeys), keyNames(listenerKeys)...); !slices.Equal(keys, want) {
		t.Errorf("%s names\n  %v\nthe parser knows\n  %v", example, keys, want)
	}
}

// keel config check names the file, line and key; and whole-config
// errors name where the key was set.
func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"listen = 127.0.0.1:1\n\nmax_inflight = -1\n", `:3: key "max_inflight": want a number 0..65535`},
		{"listen = 1883\n", `:1: key "listen": want HOST:PORT, got "1883"`},
		{"# metrics off\npprof = true\n", `:2: key "pprof": /debug/pprof/ is served on the admin address: set admin too`},
		{"admin = 127.0.0.1:1\nmetrics = 127.0.0.1:2\n", `:2: key "metrics": metrics is the old name of admin`},
		{"admin = nope\n", `:1: key "admin": want HOST:PORT, got "nope"`},
	} {
		p := writeConfig(t, tc.text)
		code, out, errOut := runIn("config", "check", p)
		if code != 1 || out != "" || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.text, code, out, errOut, p+tc.want)
		}
	}
	code, _, errOut := runIn("config", "check", filepath.Join(t.TempDir(), "missing.conf"))
	if code != 1 || !strings.Contains(errOut, "missing.conf: no such file") {
		t.Errorf("config check of a missing file: exit %d, stderr %q", code, errOut)
	}
}

// [listener NAME] sections add listeners with their own keys; the default
// listener runs only while the top level configures it.
func TestConfigListenerSections(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srv := ca.Server("server")
	p := writeConfig(t, "data = /tmp/d\nmax_connections = 7\n\n[listener tls]\nlisten = 127.0.0.1:8883\ncertfile = "+srv.CertFile+
		"\nkeyfile = "+srv.KeyFile+"\ncafile = "+ca.File+"\nrequire_certificate = true\nuse_identity_as_username = true\nmax_connections = 3\n\n"+
		"[listener plain]\nlisten = [::1]:1884\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	ls := c.listeners()
	if len(ls) != 2 || ls[0].Name != "tls" || ls[1].Name != "plain" {
		t.Fatalf("got listeners %v, want tls and plain (no default: the top level sets none of its keys)", ls)
	}
	if c.MaxConnections != 7 || ls[0].MaxConnections != 3 || !ls[0].TLS.RequireCertificate || !ls[0].UseIdentity || ls[1].Listen != "[::1]:1884" {
		t.Fatalf("got global max %d, listeners %+v %+v", c.MaxConnections, *ls[0], *ls[1])
	}
	eff := c.effective()
	for _, want := range []string{"max_connections = 7\n", "\n[listener tls]\nlisten = 127.0.0.1:8883\n", "max_connections = 3\n", "path = /mqtt\n", "[listener plain]\n"} {
		if !strings.Contains(eff, want) {
			t.Errorf("effective configuration lacks %q:\n%s", want, eff)
		}
	}

	// A top-level listener key keeps the default listener.
	p = writeConfig(t, "listen = 127.0.0.1:1999\n[listener b]\nlisten = 127.0.0.1:2000\n")
	c = defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if ls := c.listeners(); len(ls) != 2 || ls[0].Name != "default" || ls[0].Listen != "127.0.0.1:1999" {
		t.Fatalf("got %v, want the default listener on 127.0.0.1:1999, then b", ls)
	}
}

// Listener errors name the file, the line and the key: a key in the wrong
// section, an unknown one, a mosquitto option Go cannot honour, a TLS key
// without the certificate, a file that cannot be read or does not match,
// an address other hosts can reach without allow_anonymous.
func TestConfigListenerErrors(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srv := ca.Server("server")
	other := ca.Server("other")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		text, want string
	}{
		{"[listener a]\nlisten = 127.0.0.1:1\ndata = /tmp\n", `:3: key "data": is a top-level key, not a listener's`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncertfil = x\n", `:3: key "certfil": unknown key`},
		{"[listener a]\npsk_hint = hi\n", `:2: key "psk_hint": TLS-PSK is not supported`},
		{"ciphers_tls1.3 = TLS_AES_128_GCM_SHA256\n", `:1: key "ciphers_tls1.3": Go's crypto/tls does not let`},
		{"[listener a]\n\ndhparamfile = /x\n", `:3: key "dhparamfile": Go's crypto/tls has no finite-field`},
		{"[listener a]\n[listener a]\n", `:2: listener "a" is already defined at`},
		{"[listener default]\n", `:1: listener name "default" is the top-level listener's`},
		{"[listen a]\n", `:1: want a section [listener NAME]`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncafile = " + ca.File + "\n", `:3: key "cafile": TLS needs both certfile and keyfile`},
		{"[listener a]\nlisten = 127.0.0.1:1\nrequire_certificate = true\n", `:3: key "require_certificate": TLS needs both certfile and keyfile`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncertfile = " + missing + "\nkeyfile = " + srv.KeyFile + "\n", `:3: key "certfile": certfile ` + missing + `: open`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncertfile = " + srv.CertFile + "\nkeyfile = " + other.KeyFile + "\n", `:4: key "keyfile": keyfile ` + other.KeyFile + `: tls: private key does not match public key`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncertfile = " + srv.CertFile + "\nkeyfile = " + srv.KeyFile + "\ncafile = " + srv.KeyFile + "\n", `:5: key "cafile": cafile ` + srv.KeyFile + `: no PEM CERTIFICATE`},
		{"[listener a]\nlisten = 127.0.0.1:1\ncertfile = " + srv.CertFile + "\nkeyfile = " + srv.KeyFile + "\nuse_identity_as_username = true\n", `:5: key "use_identity_as_username": needs require_certificate = true`},
		{"[listener a]\nlisten = 127.0.0.1:1\ntls_version = tlsv1.1\n", `:3: key "tls_version": want tlsv1.2 or tlsv1.3`},
		{"[listener a]\nlisten = 127.0.0.1:1\nciphers = RC4-MD5\n", `:3: key "ciphers": TLS 1.2 cipher suite "RC4-MD5" is insecure`},
		{"[listener a]\nlisten = 127.0.0.1:1\npath = /ws\n", `:3: key "path": is a WebSocket key: set protocol = websockets`},
		{"[listener a]\nlisten = 127.0.0.1:1\nproxy_trusted = 10.0.0.0/8\n", `:3: key "proxy_trusted": set proxy_protocol`},
		{"[listener a]\nlisten = 127.0.0.1:1\nproxy_trusted = 10.0.0.0/33\n", `:3: key "proxy_trusted": want CIDR`},
		{"[listener a]\nlisten = 127.0.0.1:1\nprotocol = http\n", `:3: key "protocol": want mqtt or websockets`},
	} {
		p := writeConfig(t, tc.text)
		code, out, errOut := runIn("config", "check", p)
		if code != 1 || out != "" || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.text, code, out, errOut, p+tc.want)
		}
	}
}

// Secure by default: a listener other hosts can reach refuses to start
// unless allow_anonymous = true is set on it; loopback needs nothing.
func TestNonLoopbackNeedsAllowAnonymous(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"listen = 0.0.0.0:1883\n", `:1: key "listen": 0.0.0.0:1883 is reachable from other hosts and no authentication is configured for it: set password_file (or client certificates: require_certificate), or allow_anonymous = true`},
		{"[listener a]\nlisten = :1883\n", `:2: key "listen": :1883 is reachable from other hosts`},
		{"[listener a]\nlisten = [::]:1883\nallow_anonymous = false\n", `:2: key "listen": [::]:1883 is reachable`},
		{"[listener a]\nlisten = 192.0.2.1:1883\n", `:2: key "listen": 192.0.2.1:1883 is reachable`},
		{"[listener a]\nlisten = broker.example:1883\n", `:2: key "listen": broker.example:1883 is reachable`},
		// allow_anonymous on one listener does not open another.
		{"[listener a]\nlisten = 0.0.0.0:1\nallow_anonymous = true\n[listener b]\nlisten = 0.0.0.0:2\n", `:5: key "listen": 0.0.0.0:2 is reachable`},
	} {
		p := writeConfig(t, tc.text)
		code, _, errOut := runIn("config", "check", p)
		if code != 1 || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stderr %q; want 1 and %q", tc.text, code, errOut, p+tc.want)
		}
	}
	for _, text := range []string{
		"listen = 0.0.0.0:1883\nallow_anonymous = true\n",
		"[listener a]\nlisten = [::]:1883\nallow_anonymous = true\n",
		"[listener a]\nlisten = localhost:1883\n[listener b]\nlisten = [::1]:1883\n[listener c]\nlisten = 127.0.0.2:1883\n",
	} {
		p := writeConfig(t, text)
		if code, _, errOut := runIn("config", "check", p); code != 0 {
			t.Errorf("config check of %q: exit %d, stderr %q; want ok", text, code, errOut)
		}
	}
}

// allow_anonymous: a listener's own value, else the top level's (every
// listener's default, as mosquitto.conf's global one), else true only on
// loopback without a password file or certificate usernames.
func TestAllowAnonymousDefaults(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(pw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		text string
		want map[string]bool // listener name -> lets anonymous clients in
	}{
		{"", map[string]bool{"default": true}},
		{"password_file = " + pw + "\n", map[string]bool{"default": false}},
		{"allow_anonymous = true\npassword_file = " + pw + "\n", map[string]bool{"default": true}},
		{"[listener a]\npassword_file = " + pw + "\n", nil}, // one password file for all listeners: a top-level key
		{"[listener a]\nlisten = 127.0.0.1:1\n[listener b]\nlisten = 0.0.0.0:2\nallow_anonymous = true\n",
			map[string]bool{"a": true, "b": true}},
		{"password_file = " + pw + "\n[listener a]\nlisten = 127.0.0.1:1\n[listener b]\nlisten = 0.0.0.0:2\n",
			map[string]bool{"a": false, "b": false}},
		{"allow_anonymous = false\n[listener a]\nlisten = 127.0.0.1:1\n[listener b]\nlisten = 0.0.0.0:2\nallow_anonymous = true\n",
			map[string]bool{"default": false, "a": false, "b": true}},
	} {
		cfg := defaultConfig()
		err := cfg.load(writeConfig(t, tc.text))
		if err == nil {
			err = cfg.validate()
		}
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: loaded; want an error", tc.text)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		got := map[string]bool{}
		for _, l := range cfg.listeners() {
			got[l.Name] = cfg.anonymous(l)
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("%q: anonymous by listener %v, want %v", tc.text, got, tc.want)
		}
	}
}
