package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keelmq/keel/wal"
)

const inspectUsage = `Usage:
  keel inspect DATA [VIEW] [flags]              a stopped broker's data directory (read-only)
  keel inspect --admin HOST:PORT [VIEW] [flags] a running broker, through its admin listener

VIEW is one of:
  stats          counts, store size and Pebble's levels (the default)
  sessions       every stored session: protocol, expiry, subscriptions, queue
  session ID     one session in full: subscriptions, queue, in-flight and
                 inbound QoS 2 packet ids, will
  queues         the sessions with queued messages, largest queue first
  retained       the retained messages: topic, QoS, size, expiry

Flags:
  --json          print JSON (the admin API's own, field by field)
  --prefix P      only client ids (retained: topics) that start with P
  --limit N       at most N rows (sessions, queues, retained); 0: all
  --after NAME    only rows after NAME (the "next" of the previous page)
  --pebble        stats: also print Pebble's own metrics table
  --admin ADDR    ask the broker serving its admin listener on ADDR
                  (KEEL_ADMIN_TOKEN in the environment, if set, is sent
                  as its admin token)

keel inspect never writes: it opens the store with Pebble's read-only mode
and runs no replay that writes. A data directory a running keel holds is
refused with that keel's PID: inspect it through --admin instead.
Exit status: 0 done, 1 failed, 2 usage error.
`

var errNoSession = errors.New("no such session")

// The views, as the admin API serves them and --json prints them.
type viewHeader struct {
	At   time.Time `json:"at"`
	Dir  string    `json:"dir,omitempty"`
	Live bool      `json:"live"`
}

type statsView struct {
	viewHeader
	Stats  inspectStats `json:"stats"`
	Broker *brokerInfo  `json:"broker,omitempty"` // live only
}

type sessionsView struct {
	viewHeader
	Sessions []sessionInfo `json:"sessions"`
	Next     string        `json:"next,omitempty"` // --after for the next page
}

type oneSessionView struct {
	viewHeader
	Session sessionInfo `json:"session"`
}

type queueRow struct {
	ClientID       string     `json:"client_id"`
	Connected      bool       `json:"connected"`
	DisconnectedAt *time.Time `json:"disconnected_at,omitempty"`
	Queue          queueInfo  `json:"queue"`
}

type queuesView struct {
	viewHeader
	Queues []queueRow `json:"queues"`
	Next   string     `json:"next,omitempty"`
}

type retainedView struct {
	viewHeader
	Retained []retainInfo `json:"retained"`
	Next     string       `json:"next,omitempty"`
}

// brokerInfo is what only a running broker knows (live stats view).
type brokerInfo struct {
	Version          string  `json:"version"`
	UptimeSeconds    float64 `json:"uptime_seconds"`
	ClientsConnected int64   `json:"clients_connected"`
	MessagesReceived uint64  `json:"messages_received"`
	MessagesSent     uint64  `json:"messages_sent"`
	StoreSyncs       uint64  `json:"store_syncs"`
	StoreTxns        uint64  `json:"store_txns"`
	CommitFailures   uint64  `json:"commit_failures"`
	StoreFailed      string  `json:"store_failed,omitempty"`

	// The broker's own counts (its memory, not the snapshot's scan): what
	// /metrics serves, for the console.
	SessionsPersistent int64             `json:"sessions_persistent"`
	SessionsOffline    int64             `json:"sessions_offline"`
	QueuedMessages     int64             `json:"queued_messages"` // queued and in flight
	QueuedBytes        int64             `json:"queued_bytes"`    // shared bodies counted once
	Retained           int               `json:"retained"`
	StoreBytes         uint64            `json:"store_bytes"`
	Dropped            map[string]uint64 `json:"dropped"` // by reason, every reason present
	Refused            map[string]uint64 `json:"refused"` // by reason, every reason present
	DedupHits          uint64            `json:"dedup_hits"`
	DedupIDs           int64             `json:"dedup_ids"`
	Fsync              fsyncInfo         `json:"fsync"`
	diskInfo                             // the disk and the retained set's bytes (disk.go)
}

// fsyncInfo sums up the WAL's fsync latency histogram since the start.
type fsyncInfo struct {
	Count      uint64  `json:"count"`
	SumSeconds float64 `json:"sum_seconds"`
	// P50 and P99 are the upper bounds of the buckets that hold the
	// median and the 99th percentile (0: no sync yet; -1: above the
	// last bucket).
	P50Seconds float64 `json:"p50_le_seconds"`
	P99Seconds float64 `json:"p99_le_seconds"`
}

func fsyncSummary(h wal.Histogram) fsyncInfo {
	f := fsyncInfo{Count: h.Count(), SumSeconds: h.Sum.Seconds()}
	quantile := func(q float64) float64 {
		if f.Count == 0 {
			return 0
		}
		want := uint64(q*float64(f.Count) + 0.5)
		if want < 1 {
			want = 1
		}
		var n uint64
		for i, le := range h.Bounds {
			if n += h.Counts[i]; n >= want {
				return le.Seconds()
			}
		}
		return -1
	}
	f.P50Seconds, f.P99Seconds = quantile(0.5), quantile(0.99)
	return f
}

// buildView picks view out of in. id is the session view's client id.
func buildView(in *inspection, view, id string, p page) (any, error) {
	h := viewHeader{At: in.At, Dir: in.Dir, Live: in.Live}
	switch view {
	case "stats":
		return &statsView{viewHeader: h, Stats: in.Stats}, nil
	case "sessions":
		rows := pageOf(in.Sessions, func(s sessionInfo) string { return s.ClientID }, p)
		v := &sessionsView{viewHeader: h, Sessions: rows}
		if p.limit > 0 && len(rows) == p.limit && len(rows) > 0 {
			v.Next = rows[len(rows)-1].ClientID
			if len(pageOf(in.Sessions, func(s sessionInfo) string { return s.ClientID }, page{prefix: p.prefix, after: v.Next, limit: 1})) == 0 {
				v.Next = ""
			}
		}
		return v, nil
	case "session":
		for _, s := range in.Sessions {
			if s.ClientID == id {
				return &oneSessionView{viewHeader: h, Session: s}, nil
			}
		}
		return nil, fmt.Errorf("%w %q", errNoSession, id)
	case "queues":
		// Largest first, so paging is by position: after is the client
		// id ending the previous page.
		all := largestQueues(pageOf(in.Sessions, func(s sessionInfo) string { return s.ClientID }, page{prefix: p.prefix}))
		start := 0
		if p.after != "" {
			for i, s := range all {
				if s.ClientID == p.after {
					start = i + 1
				}
			}
		}
		all = all[start:]
		v := &queuesView{viewHeader: h, Queues: []queueRow{}}
		for _, s := range all {
			if p.limit > 0 && len(v.Queues) == p.limit {
				v.Next = v.Queues[len(v.Queues)-1].ClientID
				break
			}
			v.Queues = append(v.Queues, queueRow{ClientID: s.ClientID, Connected: s.Connected, DisconnectedAt: s.DisconnectedAt, Queue: s.Queue})
		}
		return v, nil
	case "retained":
		rows := pageOf(in.Retained, func(r retainInfo) string { return r.Topic }, p)
		v := &retainedView{viewHeader: h, Retained: rows}
		if p.limit > 0 && len(rows) == p.limit {
			last := rows[len(rows)-1].Topic
			if len(pageOf(in.Retained, func(r retainInfo) string { return r.Topic }, page{prefix: p.prefix, after: last, limit: 1})) > 0 {
				v.Next = last
			}
		}
		return v, nil
	}
	return nil, fmt.Errorf("unknown view %q (want stats, sessions, session ID, queues or retained)", view)
}

func inspectCmd(args []string, stdout, stderr io.Writer) int {
	c := newSubcommand("inspect", inspectUsage)
	asJSON := c.fs.Bool("json", false, "")
	prefix := c.fs.String("prefix", "", "")
	limit := c.fs.Int("limit", 0, "")
	after := c.fs.String("after", "", "")
	withPebble := c.fs.Bool("pebble", false, "")
	admin := c.fs.String("admin", "", "")
	pos, code, ok := c.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	var data string
	if *admin == "" {
		if len(pos) == 0 {
			return c.usageError(stderr, "want DATA (a data directory) or --admin HOST:PORT")
		}
		data, pos = pos[0], pos[1:]
	}
	view, id := "stats", ""
	if len(pos) > 0 {
		view, pos = pos[0], pos[1:]
	}
	switch {
	case view == "session" && len(pos) != 1:
		return c.usageError(stderr, "session takes the client ID")
	case view == "session":
		id, pos = pos[0], nil
	case view != "stats" && view != "sessions" && view != "queues" && view != "retained":
		return c.usageError(stderr, fmt.Sprintf("unknown view %q", view))
	}
	if len(pos) > 0 {
		return c.usageError(stderr, fmt.Sprintf("unexpected argument %q", pos[0]))
	}
	if *limit < 0 {
		return c.usageError(stderr, "--limit wants a number of rows, 0 or more")
	}
	p := page{prefix: *prefix, after: *after, limit: *limit}

	var v any
	var err error
	if *admin != "" {
		v, err = inspectLive(*admin, view, id, p)
	} else {
		v, err = inspectOffline(data, view, id, p)
	}
	if err != nil {
		return c.fail(stderr, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return c.fail(stderr, err)
		}
		return 0
	}
	printView(stdout, v, *withPebble)
	return 0
}

// inspectOffline reads a stopped broker's data directory.
func inspectOffline(data, view, id string, p page) (any, error) {
	r, err := wal.OpenReadOnly(wal.Options{Dir: data})
	if errors.Is(err, wal.ErrLocked) {
		return nil, fmt.Errorf("%w\n(a running keel's data is read through its admin listener: keel inspect --admin HOST:PORT, "+
			"HOST:PORT being its config's admin address)", err)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	in, err := inspect(r, time.Now())
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", data, err)
	}
	in.Dir, in.Stats.FormatVersion = data, r.Format()
	m, err := r.Metrics()
	if err != nil {
		return nil, err
	}
	in.Stats.Store = storeView(m)
	return buildView(in, view, id, p)
}

// inspectLive asks a running broker's admin listener for view.
func inspectLive(addr, view, id string, p page) (any, error) {
	q := url.Values{}
	if p.prefix != "" {
		q.Set("prefix", p.prefix)
	}
	if p.after != "" {
		q.Set("after", p.after)
	}
	if p.limit > 0 {
		q.Set("limit", strconv.Itoa(p.limit))
	}
	path := "/api/" + view
	var v any
	switch view {
	case "stats":
		v = new(statsView)
	case "sessions":
		v = new(sessionsView)
	case "session":
		path, v = "/api/sessions/"+url.PathEscape(id), new(oneSessionView)
	case "queues":
		v = new(queuesView)
	case "retained":
		v = new(retainedView)
	}
	if err := adminGet(addr, path, q, v); err != nil {
		return nil, err
	}
	return v, nil
}

// printView prints v as text for a terminal.
func printView(w io.Writer, v any, withPebble bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	now := time.Now()
	switch v := v.(type) {
	case *statsView:
		s := v.Stats
		if v.Live {
			fmt.Fprintf(tw, "broker\trunning (read through its admin listener)\n")
		} else {
			fmt.Fprintf(tw, "data directory\t%s (stopped broker, read-only)\n", v.Dir)
		}
		if b := v.Broker; b != nil {
			fmt.Fprintf(tw, "version\tkeel %s, up %s\n", b.Version, (time.Duration(b.UptimeSeconds) * time.Second).String())
			fmt.Fprintf(tw, "clients connected\t%d\n", b.ClientsConnected)
			fmt.Fprintf(tw, "messages\t%d received, %d sent\n", b.MessagesReceived, b.MessagesSent)
			fmt.Fprintf(tw, "commits\t%d txns in %d syncs, %d failed\n", b.StoreTxns, b.StoreSyncs, b.CommitFailures)
			if b.StoreFailed != "" {
				fmt.Fprintf(tw, "STORE FAILED\t%s\n", b.StoreFailed)
			}
		}
		fmt.Fprintf(tw, "format version\t%d\n", s.FormatVersion)
		fmt.Fprintf(tw, "sessions\t%d (subscriptions %d, wills %d)\n", s.Sessions, s.Subscriptions, s.Wills)
		fmt.Fprintf(tw, "queue entries\t%d (queued %d, in flight %d)\n", s.QueueEntries, s.Queued, s.Inflight)
		fmt.Fprintf(tw, "shared bodies\t%d, %s\n", s.SharedBodies, bytesText(s.SharedBodyBytes))
		fmt.Fprintf(tw, "inbound QoS 2 ids\t%d\n", s.InboundQoS2)
		fmt.Fprintf(tw, "retained\t%d topics, %s of payload\n", s.Retained, bytesText(s.RetainedBytes))
		if st := s.Store; st != nil {
			fmt.Fprintf(tw, "store\t%s on disk; WAL %d files, %s; memtable %s; read amplification %d\n",
				bytesText(int64(st.DiskBytes)), st.WALFiles, bytesText(int64(st.WALBytes)), bytesText(int64(st.MemtableBytes)), st.ReadAmp)
			for _, l := range st.Levels {
				if l.Tables > 0 {
					fmt.Fprintf(tw, "  L%d\t%d tables, %s, %d sublevels, score %.2f\n", l.Level, l.Tables, bytesText(l.Bytes), l.Sublevels, l.Score)
				}
			}
			if withPebble {
				tw.Flush()
				fmt.Fprintf(w, "\n%s", st.Pebble)
			}
		}
	case *sessionsView:
		fmt.Fprintln(tw, "CLIENT\tPROTO\tSTATE\tEXPIRY\tSUBS\tQUEUED\tINFLIGHT\tBYTES\tWILL")
		for _, s := range v.Sessions {
			will := "-"
			if s.Will != nil {
				will = s.Will.Topic
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", s.ClientID, s.Protocol, stateText(s.Connected, s.DisconnectedAt, now),
				expiryText(s, now), len(s.Subscriptions), s.Queue.Queued, s.Queue.Inflight, bytesText(s.Queue.Bytes), will)
		}
		nextText(tw, v.Next)
	case *oneSessionView:
		s := v.Session
		fmt.Fprintf(tw, "client\t%s\n", s.ClientID)
		fmt.Fprintf(tw, "protocol\t%s (level %d), persistent\n", s.Protocol, s.ProtocolLevel)
		fmt.Fprintf(tw, "state\t%s\n", stateText(s.Connected, s.DisconnectedAt, now))
		fmt.Fprintf(tw, "expiry\t%s\n", expiryText(s, now))
		fmt.Fprintf(tw, "queue\t%d entries: %d queued, %d in flight; %s (oldest seq %d)\n",
			s.Queue.Entries, s.Queue.Queued, s.Queue.Inflight, bytesText(s.Queue.Bytes), s.Queue.OldestSeq)
		if w := s.Will; w != nil {
			fmt.Fprintf(tw, "will\t%s, QoS %d, retain %t, %s, delay %ds\n", w.Topic, w.QoS, w.Retain, bytesText(int64(w.PayloadBytes)), w.DelaySeconds)
		} else {
			fmt.Fprintf(tw, "will\tnone\n")
		}
		fmt.Fprintf(tw, "subscriptions\t%d\n", len(s.Subscriptions))
		for _, sub := range s.Subscriptions {
			fmt.Fprintf(tw, "  %s\tQoS %d%s\n", sub.Filter, sub.QoS, subOptions(sub))
		}
		fmt.Fprintf(tw, "in flight\t%d\n", len(s.Inflight))
		for _, f := range s.Inflight {
			fmt.Fprintf(tw, "  packet id %d\t%s, QoS %d, %s (seq %d)\n", f.PacketID, f.State, f.QoS, cmpStr(f.Topic, "-"), f.Seq)
		}
		ids := make([]string, len(s.InboundQoS2))
		for i, id := range s.InboundQoS2 {
			ids[i] = strconv.Itoa(int(id))
		}
		fmt.Fprintf(tw, "inbound QoS 2 ids\t%s\n", cmpStr(strings.Join(ids, " "), "none"))
	case *queuesView:
		fmt.Fprintln(tw, "CLIENT\tENTRIES\tQUEUED\tINFLIGHT\tBYTES\tSTATE")
		for _, q := range v.Queues {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", q.ClientID, q.Queue.Entries, q.Queue.Queued, q.Queue.Inflight,
				bytesText(q.Queue.Bytes), stateText(q.Connected, q.DisconnectedAt, now))
		}
		nextText(tw, v.Next)
	case *retainedView:
		fmt.Fprintln(tw, "TOPIC\tQOS\tPAYLOAD\tSTORED\tEXPIRES")
		for _, r := range v.Retained {
			exp := "never"
			if r.ExpiresAt != nil {
				exp = r.ExpiresAt.Format(time.RFC3339)
				if r.Expired {
					exp += " (expired)"
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Topic, r.QoS, bytesText(int64(r.PayloadBytes)), bytesText(int64(r.StoredBytes)), exp)
		}
		nextText(tw, v.Next)
	}
}

func nextText(w io.Writer, next string) {
	if next != "" {
		fmt.Fprintf(w, "(more: --after %q)\n", next)
	}
}

func stateText(connected bool, at *time.Time, now time.Time) string {
	if connected || at == nil {
		return "connected"
	}
	return "offline " + now.Sub(*at).Round(time.Second).String()
}

func expiryText(s sessionInfo, now time.Time) string {
	switch {
	case s.NeverExpires:
		return "never"
	case s.ExpiresAt != nil && !s.ExpiresAt.After(now):
		return "expired (ends at the next start)"
	case s.ExpiresAt != nil:
		return "in " + s.ExpiresAt.Sub(now).Round(time.Second).String()
	}
	return (time.Duration(s.ExpirySeconds) * time.Second).String() + " after disconnect"
}

func subOptions(s subInfo) string {
	var o []string
	if s.NoLocal {
		o = append(o, "no local")
	}
	if s.RetainAsPublished {
		o = append(o, "retain as published")
	}
	if s.RetainHandling != 0 {
		o = append(o, fmt.Sprintf("retain handling %d", s.RetainHandling))
	}
	if s.SubscriptionID != 0 {
		o = append(o, fmt.Sprintf("subscription id %d", s.SubscriptionID))
	}
	if len(o) == 0 {
		return ""
	}
	return ", " + strings.Join(o, ", ")
}

func cmpStr(s, ifEmpty string) string {
	if s == "" {
		return ifEmpty
	}
	return s
}

// bytesText is n in B, KiB, MiB or GiB.
func bytesText(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return fmt.Sprintf("%d B", n)
	case n < k*k:
		return fmt.Sprintf("%.1f KiB", float64(n)/k)
	case n < k*k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(k*k*k))
}
