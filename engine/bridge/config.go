package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Direction is which way a topic is bridged.
type Direction uint8

const (
	Out  Direction = 1 << iota // local messages forwarded to the remote
	In                         // the remote's messages published here
	Both = Out | In
)

func (d Direction) String() string {
	switch d {
	case Out:
		return "out"
	case In:
		return "in"
	case Both:
		return "both"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// Topic is one topic line of a bridge, as Mosquitto's:
//
//	topic PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]
//
// A message on LocalPrefix+T goes out as RemotePrefix+T, and one on
// RemotePrefix+T comes in as LocalPrefix+T, for every T that PATTERN
// matches. An empty PATTERN ("") with prefixes bridges exactly the
// prefixes' topics.
type Topic struct {
	Pattern      string
	Dir          Direction
	QoS          byte // the QoS of the bridge's subscription (local for out, remote for in)
	LocalPrefix  string
	RemotePrefix string
}

// LocalFilter is the filter of the topic's local subscription.
func (t Topic) LocalFilter() string { return t.LocalPrefix + t.Pattern }

// RemoteFilter is the filter of the topic's remote subscription.
func (t Topic) RemoteFilter() string { return t.RemotePrefix + t.Pattern }

// ParseTopic parses the value of a topic line. Fields are separated by
// blanks; "" is an empty field (an empty prefix, or an empty pattern).
func ParseTopic(v string) (Topic, error) {
	f := strings.Fields(v)
	for i, s := range f {
		if s == `""` {
			f[i] = ""
		}
	}
	t := Topic{Dir: Out}
	switch len(f) {
	case 1, 2, 3, 5:
	case 4:
		return t, errors.New("want PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]: a local prefix needs a remote prefix too")
	default:
		return t, errors.New("want PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]")
	}
	t.Pattern = f[0]
	if len(f) >= 2 {
		switch f[1] {
		case "out":
			t.Dir = Out
		case "in":
			t.Dir = In
		case "both":
			t.Dir = Both
		default:
			return t, fmt.Errorf("want out, in or both as the direction, got %q", f[1])
		}
	}
	if len(f) >= 3 {
		q, err := strconv.ParseUint(f[2], 10, 8)
		if err != nil || q > 2 {
			return t, fmt.Errorf("want QoS 0, 1 or 2, got %q", f[2])
		}
		t.QoS = byte(q)
	}
	if len(f) == 5 {
		t.LocalPrefix, t.RemotePrefix = f[3], f[4]
	}
	for _, p := range []string{t.LocalPrefix, t.RemotePrefix} {
		if strings.ContainsAny(p, "+#") {
			return t, fmt.Errorf("a prefix may not hold a wildcard, got %q", p)
		}
	}
	if t.Pattern == "" && t.LocalPrefix == "" && t.RemotePrefix == "" {
		return t, errors.New("want a pattern (an empty one only with prefixes)")
	}
	if t.Pattern == "" && (t.LocalPrefix == "" || t.RemotePrefix == "") {
		return t, errors.New("an empty pattern bridges the prefixes themselves: both must be set")
	}
	for _, fl := range []string{t.LocalFilter(), t.RemoteFilter()} {
		if err := packet.ValidTopicFilter(fl); err != nil {
			return t, fmt.Errorf("topic filter %q: %v", fl, err)
		}
		if _, _, shared := packet.ParseShared(fl); shared {
			return t, fmt.Errorf("topic filter %q: a bridge cannot take a shared subscription", fl)
		}
	}
	return t, nil
}

// String is the topic as a config line's value.
func (t Topic) String() string {
	q := func(s string) string {
		if s == "" {
			return `""`
		}
		return s
	}
	s := fmt.Sprintf("%s %s %d", q(t.Pattern), t.Dir, t.QoS)
	if t.LocalPrefix != "" || t.RemotePrefix != "" {
		s += " " + q(t.LocalPrefix) + " " + q(t.RemotePrefix)
	}
	return s
}

// Config is one bridge. The zero value of every field but Name,
// Addresses and Topics is valid: defaults are Mosquitto's.
type Config struct {
	Name      string
	Addresses []string // host:port, tried in turn
	Topics    []Topic

	// ClientID is the remote client id (remote_clientid); "": HOSTNAME.NAME,
	// as Mosquitto.
	ClientID string
	Username string
	// Password, if not nil, is sent (remote_password). It is never logged.
	Password []byte
	// CleanSession makes the remote session a clean one (3.1.1 Clean
	// Session, 5.0 Clean Start with no expiry). The default, false, is a
	// persistent session on the remote, which exactly-once needs.
	CleanSession bool
	Version      byte          // packet.V311 (the default, as Mosquitto) or packet.V5
	KeepAlive    time.Duration // 0: 60 s; whole seconds
	// RestartBase and RestartCap are restart_timeout: the wait before a
	// reconnection grows from RestartBase to RestartCap (with jitter);
	// RestartCap 0 is a constant RestartBase. Both 0: 5 s and 30 s.
	RestartBase, RestartCap time.Duration
	// TryPrivate marks the CONNECT as a bridge's (3.1.1: protocol level
	// 0x84), so that a Mosquitto remote does not send back what the bridge
	// published. Only for 3.1.1.
	TryPrivate bool

	// LocalReceiveMaximum is the local broker's Receive Maximum (its
	// receive_maximum): the remote may have no more QoS 1/2 messages in
	// flight to the bridge. 0: 65535.
	LocalReceiveMaximum uint16
	// TLS, if set, secures the connection to the remote; ServerName, if
	// empty, is the address's host.
	TLS *tls.Config

	// SysInterval is how often the bridge's counters are published under
	// $SYS/broker/bridges/NAME/ (its state also on every change); 0: 10 s;
	// negative: no $SYS at all.
	SysInterval time.Duration

	// window311 overrides window311 (tests: a window larger than what
	// they leave in flight).
	window311 int
	// Dial opens the connection to one address (nil: TCP).
	Dial   func(ctx context.Context, addr string) (net.Conn, error)
	Logger *slog.Logger
}

// ConfigError is a configuration a bridge refuses; Key names the key
// (Line is the index of the topic line for "topic").
type ConfigError struct {
	Key  string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string { return e.Msg }

// Validate checks the configuration as a whole and fills in defaults.
func (c *Config) Validate() error {
	bad := func(key string, line int, format string, args ...any) error {
		return &ConfigError{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if len(c.Addresses) == 0 {
		return bad("address", 0, "a bridge needs an address = host:port[, host:port...]")
	}
	for _, a := range c.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad("address", 0, "want host:port, got %q", a)
		}
	}
	if len(c.Topics) == 0 {
		return bad("topic", 0, "a bridge needs at least one topic line")
	}
	switch c.Version {
	case 0:
		c.Version = packet.V311
	case packet.V311, packet.V5:
	default:
		return bad("bridge_protocol_version", 0, "want mqttv311 or mqttv50")
	}
	if c.Version != packet.V311 {
		c.TryPrivate = false // a 3.1.1 convention; 5.0 has No Local
	}
	if c.Version == packet.V311 && !c.TryPrivate {
		// Without No Local, a 3.1.1 remote sends back what the bridge
		// publishes to a topic it also subscribes to: a message would come
		// back in as a copy.
		for i, o := range c.Topics {
			for j, in := range c.Topics {
				if o.Dir&Out != 0 && in.Dir&In != 0 && Overlap(o.RemoteFilter(), in.RemoteFilter()) {
					return bad("topic", j, "%q (in) overlaps %q (out) on the remote: over MQTT 3.1.1 the remote would send back what the bridge publishes; set try_private = true (a Mosquitto remote then does not), or bridge_protocol_version = mqttv50 (No Local), or make in and out topics disjoint",
						in.RemoteFilter(), c.Topics[i].RemoteFilter())
				}
			}
		}
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 60 * time.Second
	}
	if c.KeepAlive < time.Second || c.KeepAlive > 65535*time.Second {
		return bad("keepalive_interval", 0, "want 1..65535 seconds")
	}
	if c.RestartBase == 0 && c.RestartCap == 0 {
		c.RestartBase, c.RestartCap = 5*time.Second, 30*time.Second
	}
	if c.RestartBase <= 0 || c.RestartCap != 0 && c.RestartCap < c.RestartBase {
		return bad("restart_timeout", 0, "want BASE [CAP] in seconds, CAP not below BASE")
	}
	if c.ClientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "keel"
		}
		c.ClientID = host + "." + c.Name
	}
	if c.SysInterval == 0 {
		c.SysInterval = 10 * time.Second
	}
	if c.LocalReceiveMaximum == 0 {
		c.LocalReceiveMaximum = 65535
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Overlap reports whether some topic name matches both filters.
func Overlap(a, b string) bool {
	if a != "" && b != "" && (a[0] == '$') != (b[0] == '$') {
		// A '$' topic is matched only by a filter naming its '$' level
		// [MQTT-4.7.2-1]: a filter starting with a wildcard cannot meet one
		// starting with '$'.
		wa, wb := a[0] == '+' || a[0] == '#', b[0] == '+' || b[0] == '#'
		if wa || wb {
			return false
		}
	}
	for {
		la, ra, ma := strings.Cut(a, "/")
		lb, rb, mb := strings.Cut(b, "/")
		if la == "#" || lb == "#" {
			return true
		}
		if la != "+" && lb != "+" && la != lb {
			return false
		}
		switch {
		case !ma && !mb:
			return true
		case !ma:
			return rb == "#" // "a" meets "a/#"
		case !mb:
			return ra == "#"
		}
		a, b = ra, rb
	}
}
