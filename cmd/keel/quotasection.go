package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// quotaConfig is one [quota NAME] section: queue quotas of its own for the
// persistent sessions whose client id and/or creating username match its
// patterns (README "Limits and quotas"). The first section that matches
// wins; a key it does not set is the top level's.
type quotaConfig struct {
	Name     string
	Username string // a pattern (quotaMatch); used if set in origin
	ClientID string
	// In engine.Options' terms: 0 the top level's, negative no limit.
	Messages int64
	Bytes    int64

	section string            // "config FILE:LINE" of its [quota NAME] line
	origin  map[string]string // where each key was set
}

var quotaSectionRE = regexp.MustCompile(`^\[quota ([A-Za-z0-9_.-]+)\]$`)

// quotaSection starts a [quota NAME] section if line is one (ok).
func (c *config) quotaSection(line, at string) (q *quotaConfig, ok bool, err error) {
	if !strings.HasPrefix(line, "[quota ") {
		return nil, false, nil
	}
	m := quotaSectionRE.FindStringSubmatch(line)
	if m == nil {
		return nil, true, fmt.Errorf("%s: want a section [quota NAME] (NAME of letters, digits, '_', '.', '-'), got %q", at, line)
	}
	for _, o := range c.Quotas {
		if o.Name == m[1] {
			return nil, true, fmt.Errorf("%s: quota %q is already defined at %s", at, m[1], strings.TrimPrefix(o.section, "config "))
		}
	}
	q = &quotaConfig{Name: m[1], section: at, origin: map[string]string{}}
	c.Quotas = append(c.Quotas, q)
	return q, true, nil
}

// quotaSectionKeys are a [quota NAME] section's keys, in the README's order.
var quotaSectionKeys = []key[quotaConfig]{
	{"username", func(q *quotaConfig, v string) error { return setPattern(&q.Username, v) },
		func(q *quotaConfig) string { return q.Username }},
	{"clientid", func(q *quotaConfig, v string) error { return setPattern(&q.ClientID, v) },
		func(q *quotaConfig) string { return q.ClientID }},
	{"max_queued_messages", func(q *quotaConfig, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of messages (0: no limit), got %q", v)
		}
		q.Messages = limit(n)
		return nil
	}, func(q *quotaConfig) string { return strconv.FormatInt(unlimit(q.Messages, 0), 10) }},
	{"max_queued_bytes", func(q *quotaConfig, v string) error {
		n, err := parseBytes(v)
		q.Bytes = limit(n)
		return err
	}, func(q *quotaConfig) string { return fmtBytes(unlimit(q.Bytes, 0)) }},
}

func setPattern(dst *string, v string) error {
	if v == "" {
		return errors.New("want a name, or a pattern with '*' for any characters")
	}
	*dst = v
	return nil
}

// line sets one key of the section.
func (q *quotaConfig) line(line, at string) error {
	key, val, ok := strings.Cut(line, "=")
	if !ok {
		return fmt.Errorf("%s: want key = value, got %q in [quota %s]", at, line, q.Name)
	}
	key, val = strings.TrimSpace(key), strings.TrimSpace(val)
	if prev, set := q.origin[key]; set {
		return fmt.Errorf("%s: key %q of [quota %s]: already set at %s", at, key, q.Name, strings.TrimPrefix(prev, "config "))
	}
	found, err := setKey(quotaSectionKeys, q, key, val)
	if !found {
		return fmt.Errorf("%s: key %q of [quota %s]: unknown key (a [quota] section takes username, clientid, max_queued_messages, max_queued_bytes)", at, key, q.Name)
	}
	if err != nil {
		return fmt.Errorf("%s: key %q of [quota %s]: %w", at, key, q.Name, err)
	}
	q.origin[key] = at
	return nil
}

// validateQuotas checks that each section says whom it is for and what.
func (c *config) validateQuotas() error {
	for _, q := range c.Quotas {
		_, u := q.origin["username"]
		_, id := q.origin["clientid"]
		if !u && !id {
			return fmt.Errorf("%s: [quota %s]: set username or clientid (or both): whom the quota is for", q.section, q.Name)
		}
		_, m := q.origin["max_queued_messages"]
		_, b := q.origin["max_queued_bytes"]
		if !m && !b {
			return fmt.Errorf("%s: [quota %s]: set max_queued_messages or max_queued_bytes (or both)", q.section, q.Name)
		}
	}
	return nil
}

// matches reports whether the section is for a session of clientID created
// by username ("" for an anonymous client: a username pattern never
// matches it).
func (q *quotaConfig) matches(clientID, username string) bool {
	if _, set := q.origin["username"]; set && (username == "" || !quotaMatch(q.Username, username)) {
		return false
	}
	if _, set := q.origin["clientid"]; set && !quotaMatch(q.ClientID, clientID) {
		return false
	}
	return true
}

// queueLimits is engine.Options.QueueLimits for the sections; nil without
// any.
func (c *config) queueLimits() func(clientID, username string) (int64, int64, bool) {
	if len(c.Quotas) == 0 {
		return nil
	}
	qs := c.Quotas
	return func(clientID, username string) (int64, int64, bool) {
		for _, q := range qs {
			if q.matches(clientID, username) {
				return q.Messages, q.Bytes, true
			}
		}
		return 0, 0, false
	}
}

// quotaMatch matches s against pattern, where '*' stands for any run of
// characters ('/' included, none included) and every other character for
// itself.
func quotaMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// effectiveQuotas prints each [quota NAME] section as keel reads it.
func (c *config) effectiveQuotas(w *strings.Builder) {
	for _, q := range c.Quotas {
		fmt.Fprintf(w, "\n[quota %s]\n", q.Name)
		for _, k := range quotaSectionKeys {
			if _, set := q.origin[k.name]; !set {
				what := "the top level's"
				if k.name == "username" || k.name == "clientid" {
					what = "any"
				}
				fmt.Fprintf(w, "# %s: %s\n", k.name, what)
				continue
			}
			fmt.Fprintf(w, "%s = %s\n", k.name, k.get(q))
		}
	}
}
