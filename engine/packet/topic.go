package packet

import "strings"

// This file holds topic names and filters (MQTT 5.0 section 4.7, shared
// subscriptions 4.8.2). The decoder checks only that they are UTF-8; the
// broker applies these functions so that it can answer per filter (SUBACK
// 0x8F) or per message (PUBACK 0x90).

const sharePrefix = "$share/"

// ValidTopicName reports whether topic may name a published message: at
// least one character [MQTT-4.7.3-1], valid UTF-8 [MQTT-1.5.4-1]
// [MQTT-1.5.4-2], at most 65,535 bytes, no wildcard characters
// [MQTT-3.3.2-2] [MQTT-4.7.0-1]. The error is an *Error with
// CodeTopicNameInvalid.
func ValidTopicName(topic string) error {
	switch {
	case topic == "":
		return &Error{Code: CodeTopicNameInvalid, Msg: "topic name is empty [MQTT-4.7.3-1]"}
	case len(topic) > maxString:
		return &Error{Code: CodeTopicNameInvalid, Msg: "topic name longer than 65535 bytes"}
	case strings.ContainsAny(topic, "+#"):
		return &Error{Code: CodeTopicNameInvalid, Msg: "topic name contains a wildcard [MQTT-3.3.2-2]"}
	case !validUTF8(topic):
		return &Error{Code: CodeTopicNameInvalid, Msg: "topic name is not valid UTF-8 [MQTT-1.5.4-1]"}
	}
	return nil
}

// ValidTopicFilter reports whether filter may be subscribed to: at least
// one character [MQTT-4.7.3-1], valid UTF-8, at most 65,535 bytes, '#'
// only as the last character and alone in its level [MQTT-4.7.1-1], '+'
// alone in its level [MQTT-4.7.1-2]. A filter starting with "$share/" is a
// shared subscription: "$share/{group}/{filter}" with a group of at least
// one character containing none of '/', '+', '#' [MQTT-4.8.2-1]
// [MQTT-4.8.2-2] and a valid, non-empty filter. The error is an *Error
// with CodeTopicFilterInvalid.
func ValidTopicFilter(filter string) error {
	if len(filter) > maxString {
		return &Error{Code: CodeTopicFilterInvalid, Msg: "topic filter longer than 65535 bytes"}
	}
	if !validUTF8(filter) {
		return &Error{Code: CodeTopicFilterInvalid, Msg: "topic filter is not valid UTF-8 [MQTT-1.5.4-1]"}
	}
	if strings.HasPrefix(filter, sharePrefix) {
		group, f, ok := ParseShared(filter)
		if !ok {
			return &Error{Code: CodeTopicFilterInvalid, Msg: "shared subscription needs $share/{group}/{filter} [MQTT-4.8.2-1]"}
		}
		if strings.ContainsAny(group, "+#") {
			return &Error{Code: CodeTopicFilterInvalid, Msg: "share name contains a wildcard [MQTT-4.8.2-2]"}
		}
		filter = f
	}
	if filter == "" {
		return &Error{Code: CodeTopicFilterInvalid, Msg: "topic filter is empty [MQTT-4.7.3-1]"}
	}
	for i := 0; i < len(filter); i++ {
		switch filter[i] {
		case '#':
			// The multi-level wildcard MUST be specified either on its
			// own or following a topic level separator, and MUST be the
			// last character [MQTT-4.7.1-1].
			if i != len(filter)-1 || (i > 0 && filter[i-1] != '/') {
				return &Error{Code: CodeTopicFilterInvalid, Msg: "'#' not alone in the last level [MQTT-4.7.1-1]"}
			}
		case '+':
			// The single-level wildcard MUST occupy an entire level
			// [MQTT-4.7.1-2].
			if (i > 0 && filter[i-1] != '/') || (i < len(filter)-1 && filter[i+1] != '/') {
				return &Error{Code: CodeTopicFilterInvalid, Msg: "'+' not alone in its level [MQTT-4.7.1-2]"}
			}
		}
	}
	return nil
}

// ParseShared splits a shared subscription filter "$share/{group}/{filter}".
// ok is true when filter starts with "$share/" followed by a non-empty
// group, a '/', and a non-empty filter; it does not validate the parts
// (ValidTopicFilter does). For any other filter ok is false.
func ParseShared(filter string) (group, topicFilter string, ok bool) {
	rest, found := strings.CutPrefix(filter, sharePrefix)
	if !found {
		return "", "", false
	}
	group, topicFilter, found = strings.Cut(rest, "/")
	if !found || group == "" || topicFilter == "" {
		return "", "", false
	}
	return group, topicFilter, true
}

// Match reports whether topic (a topic name) matches filter (a topic
// filter, not the "$share/{group}/" form: pass ParseShared's topicFilter).
// '+' matches exactly one level, '#' any number of levels including the
// parent level ("a/#" matches "a"), and a topic beginning with '$' is not
// matched by a filter beginning with a wildcard [MQTT-4.7.2-1]. It does not
// allocate.
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" && !fmore {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore:
			return !tmore
		case !tmore:
			// The topic ended; "a/#" still matches "a" [MQTT-4.7.1-1].
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}
