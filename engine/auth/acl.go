package auth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/engine/topics"
)

// An ACL file is Mosquitto's acl_file, with Mosquitto 2.0's syntax and
// meaning (src/security_default.c: aclfile__parse, add__acl,
// add__acl_pattern, mosquitto_acl_check_default; src/security.c:
// acl__check_dollar; man/mosquitto.conf.5.xml, acl_file):
//
//	# comment: '#' as the line's first character
//	topic read $SYS/#          before any "user": for anonymous clients
//	user alice                 the lines up to the next "user" are alice's
//	topic readwrite a/#        read, write, readwrite or deny; none means readwrite
//	topic deny a/secret
//	pattern write dev/%u/%c/#  for every client, wherever it stands
//
// Syntax, as Mosquitto parses it: trailing white space is dropped; words
// are separated by spaces (a tab does not separate words); the first word
// is "topic", "pattern" or "user" and anything else is refused. After
// "topic"/"pattern" comes an access word and a filter, or only a filter
// (readwrite): "topic read" alone is readwrite on the topic "read". The
// filter, like the username after "user", is the rest of the line with
// blanks trimmed, so it may contain spaces. Keel refuses what Mosquitto
// refuses, naming the file and line (Mosquitto names only the file), and
// also a filter that is not valid UTF-8 or not a valid MQTT filter.
//
// Meaning, for a client with username U (or none: anonymous) and client id
// C asking for access A to topic T:
//
//  1. "$SYS/..." is never writable and "$share..." never readable nor
//     writable (Mosquitto's acl__check_dollar; it lets bridges write
//     $SYS/broker/connection/+/state, which Keel's bridge does not need).
//  2. The "topic" lines of U's sections (of the anonymous section if U is
//     absent) are one list: if a deny line matches T, denied; else if a
//     line granting A matches T, allowed; else go on. A user with no
//     section goes straight on.
//  3. If the file has "pattern" lines and U or C contains '+' or '#',
//     denied.
//  4. The "pattern" lines, with each %c replaced by C and each %u by U (a
//     line with %u is skipped for an anonymous client), decide the same way
//     as the topic lines: a matching deny denies, a matching grant allows.
//  5. Nothing matched: denied.
//
// Matching is MQTT's [MQTT-4.7.1]: '+' is one level, '#' any number
// including none, and a filter starting with '+' or '#' never matches a
// topic starting with '$' [MQTT-4.7.2-1]: reading $SYS needs a rule that
// starts with "$SYS".
//
// Keel differs from Mosquitto 2.0 in one place, on purpose: a pattern that
// grants access does not match when the C or U it substitutes contains '/'
// (Mosquitto lets client id "a/b" match "dev/%c/#" as "dev/a/b/#", so a
// client can move into another's subtree: "dev/%c/#" is meant to hold one
// level). A deny pattern still matches its expansion, so the change only
// ever denies.
//
// Subscribe: Mosquitto 2.0's acl_file does not check SUBSCRIBE at all
// (mosquitto_acl_check_default returns success for it, with a FIXME): every
// filter is granted in the SUBACK, and what the client may see is decided
// per message at delivery, by a read check on the message's topic
// (retained messages sent on subscribe included). Keel does the same:
// Allow(..., Subscribe) is true and delivery asks for Read.

// Access is what a client asks to do with a topic. Read and Write have
// Mosquitto's values (MOSQ_ACL_READ, MOSQ_ACL_WRITE).
type Access uint8

const (
	// Read is receiving a message on the topic: every delivery, retained
	// messages and messages queued for an offline session included.
	Read Access = 1
	// Write is publishing to the topic, the will included (at CONNECT and
	// when it is published).
	Write Access = 2
	// Subscribe is a SUBSCRIBE's filter (without "$share/group/").
	Subscribe Access = 4

	readWrite Access = Read | Write
	deny      Access = 0
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case Subscribe:
		return "subscribe"
	case readWrite:
		return "readwrite"
	case deny:
		return "deny"
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

// ACL is a loaded ACL file. It implements Authorizer; it is immutable and
// safe for concurrent use (a reload makes a new one).
type ACL struct {
	anon     *ruleSet            // the topic lines before any "user"
	users    map[string]*ruleSet // each user's topic lines
	patterns []pattern
	rules    int // topic and pattern lines
	// Warnings are lines that load but likely do not mean what their
	// author meant (a pattern without %c or %u), with file and line.
	Warnings []string
}

// ruleSet is one user's topic lines, in a trie from filter to access: all
// that matters is whether a deny and which grants match (step 2 above),
// not their order.
type ruleSet struct {
	trie *topics.Trie[int, Access] // line number -> access
}

// decide is step 2 (or 4) for one list: allowed or denied if a line
// decided, else decided is false.
func (rs *ruleSet) decide(topic string, access Access) (allowed, decided bool) {
	var denied bool
	var granted Access
	rs.trie.Match(topic, func(_ string, _ int, a Access) {
		if a == deny {
			denied = true
		}
		granted |= a
	})
	switch {
	case denied:
		return false, true
	case granted&access != 0:
		return true, true
	}
	return false, false
}

// pattern is one "pattern" line, split around its %c and %u.
type pattern struct {
	access Access
	// parts alternate literal text and substitutions: parts[0], subs[0],
	// parts[1], subs[1], ..., parts[len(subs)].
	parts []string
	subs  []byte // 'c' or 'u'
	hasU  bool
}

func newPattern(filter string, access Access) pattern {
	p := pattern{access: access}
	lit := 0 // start of the current literal part
	for i := 0; i+1 < len(filter); i++ {
		if filter[i] == '%' && (filter[i+1] == 'c' || filter[i+1] == 'u') {
			p.parts = append(p.parts, filter[lit:i])
			p.subs = append(p.subs, filter[i+1])
			p.hasU = p.hasU || filter[i+1] == 'u'
			i++
			lit = i + 1
		}
	}
	p.parts = append(p.parts, filter[lit:])
	return p
}

// expand substitutes clientID and username; ok is false if the line does
// not apply (a %u for an anonymous client) or, for a grant, a value it
// substitutes contains '/' (see the package's ACL doc).
func (p *pattern) expand(clientID, username string, anonymous bool) (filter string, ok bool) {
	if len(p.subs) == 0 {
		return p.parts[0], true
	}
	if p.hasU && anonymous {
		return "", false
	}
	var b strings.Builder
	for i, s := range p.subs {
		b.WriteString(p.parts[i])
		v := clientID
		if s == 'u' {
			v = username
		}
		if p.access != deny && strings.IndexByte(v, '/') >= 0 {
			return "", false
		}
		b.WriteString(v)
	}
	b.WriteString(p.parts[len(p.subs)])
	return b.String(), true
}

// LoadACL reads the ACL file at path.
func LoadACL(path string) (*ACL, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: acl file: %w", err)
	}
	defer f.Close()
	return ParseACL(path, f)
}

// ParseACL reads an ACL file from r; name is the file's name in errors and
// warnings. An error for a refused line is a *LineError.
func ParseACL(name string, r io.Reader) (*ACL, error) {
	a := &ACL{users: make(map[string]*ruleSet)}
	var user *string // nil before the first "user" line
	err := eachLine(r, func(n int, line string) error {
		bad := func(format string, args ...any) error {
			return &LineError{File: name, Line: n, Reason: fmt.Sprintf(format, args...)}
		}
		line = strings.TrimRight(line, " \t\r\n\v\f")
		if line == "" || line[0] == '#' {
			return nil
		}
		keyword, rest := nextWord(line)
		switch keyword {
		case "":
			return nil // only spaces
		case "user":
			u := trimBlanks(rest)
			if u == "" {
				return bad("\"user\" without a username")
			}
			user = &u
			return nil
		case "topic", "pattern":
			accessWord, filterPart := nextWord(rest)
			if accessWord == "" {
				return bad("%q without a topic", keyword)
			}
			filter := trimBlanks(filterPart)
			access := readWrite
			if filter == "" {
				filter = accessWord // "topic a/b": readwrite
			} else {
				switch accessWord {
				case "read":
					access = Read
				case "write":
					access = Write
				case "readwrite":
					access = readWrite
				case "deny":
					access = deny
				default:
					return bad("access %q is not read, write, readwrite or deny", accessWord)
				}
			}
			// Checked under a first level of its own, so that "$share/#"
			// is a filter like any other, as Mosquitto reads it.
			if err := packet.ValidTopicFilter("a/" + filter); err != nil {
				var pe *packet.Error
				if errors.As(err, &pe) {
					return bad("topic filter %q: %s", filter, pe.Msg)
				}
				return bad("topic filter %q: %v", filter, err)
			}
			a.rules++
			if keyword == "pattern" {
				p := newPattern(filter, access)
				if len(p.subs) == 0 {
					a.Warnings = append(a.Warnings, fmt.Sprintf("%s:%d: pattern %q has no %%c or %%u", name, n, filter))
				}
				a.patterns = append(a.patterns, p)
				return nil
			}
			a.ruleSetFor(user).trie.Add(filter, n, access)
			return nil
		default:
			if strings.ContainsAny(keyword, "\t") {
				return bad("words must be separated by spaces, not tabs: %q", line)
			}
			return bad("unknown keyword %q (want topic, pattern or user)", keyword)
		}
	})
	if err != nil {
		var le *LineError
		if errors.As(err, &le) {
			return nil, err
		}
		return nil, fmt.Errorf("auth: acl file %s: %w", name, err)
	}
	return a, nil
}

// Len is the number of topic and pattern lines.
func (a *ACL) Len() int { return a.rules }

// nextWord splits s as strtok(s, " ") does: leading spaces skipped, the
// word up to the next space, and the rest after that one space.
func nextWord(s string) (word, rest string) {
	s = strings.TrimLeft(s, " ")
	word, rest, _ = strings.Cut(s, " ")
	return word, rest
}

func (a *ACL) ruleSetFor(user *string) *ruleSet {
	if user == nil {
		if a.anon == nil {
			a.anon = &ruleSet{trie: topics.New[int, Access]()}
		}
		return a.anon
	}
	rs := a.users[*user]
	if rs == nil {
		rs = &ruleSet{trie: topics.New[int, Access]()}
		a.users[*user] = rs
	}
	return rs
}

// Allow is the ACL's verdict (the steps in the doc above); topic is a
// topic name for Read and Write, a filter without "$share/group/" for
// Subscribe.
func (a *ACL) Allow(id Identity, clientID, topic string, access Access) bool {
	switch access {
	case Subscribe:
		return true // as Mosquitto 2.0: decided per message by Read
	case Read, Write:
	default:
		return false
	}
	// 1. Mosquitto's acl__check_dollar.
	if !dollarAllowed(topic, access) {
		return false
	}
	// 2. The user's (or the anonymous) topic lines.
	rs := a.anon
	if !id.Anonymous {
		rs = a.users[id.Username]
	}
	if rs != nil {
		if allowed, decided := rs.decide(topic, access); decided {
			return allowed
		}
	}
	if len(a.patterns) == 0 {
		return false
	}
	// 3. Wildcards in the values patterns substitute.
	if strings.ContainsAny(clientID, "+#") || (!id.Anonymous && strings.ContainsAny(id.Username, "+#")) {
		return false
	}
	// 4. The patterns.
	var granted Access
	for i := range a.patterns {
		p := &a.patterns[i]
		filter, ok := p.expand(clientID, id.Username, id.Anonymous)
		if !ok || !packet.Match(filter, topic) {
			continue
		}
		if p.access == deny {
			return false
		}
		granted |= p.access
	}
	return granted&access != 0
}
