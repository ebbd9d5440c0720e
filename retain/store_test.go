package retain

import (
	"bytes"
	"context"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keelmq/keel/wal"
)

const dir = "data"

// openLog opens a wal on fs, closed at the end of the test.
func openLog(t *testing.T, fs vfs.FS) *wal.Log {
	t.Helper()
	l, err := wal.Open(wal.Options{
		Dir: dir,
		FS:  fs,
		Pebble: func(o *pebble.Options) {
			o.MemTableSize = 4 << 20
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// reopen simulates a power loss after everything committed so far: it
// closes nothing, keeps only what was synced, and opens that.
func reopen(t *testing.T, fs *vfs.MemFS) (*vfs.MemFS, *wal.Log) {
	t.Helper()
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	return clone, openLog(t, clone)
}

func commit(t *testing.T, l *wal.Log, txn *wal.Txn) {
	t.Helper()
	if err := l.Commit(context.Background(), txn); err != nil {
		t.Fatalf("commit: %v", err)
	}
	txn.Reset()
}

// onDisk returns the retained messages stored in l, by topic.
func onDisk(t *testing.T, l *wal.Log) map[string]wal.Message {
	t.Helper()
	got := map[string]wal.Message{}
	p := wal.RetainPrefix()
	err := l.Scan(p, wal.PrefixEnd(p), func(k, v []byte) error {
		m, err := wal.DecodeMessage(v)
		if err != nil {
			return err
		}
		got[string(k[len(p):])] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func msg(topic, payload string) *wal.Message {
	return &wal.Message{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: true}
}

func TestSetReplaceClear(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs)
	s := New(l)
	var txn wal.Txn

	s.Set(&txn, msg("a/b", "one"))
	s.Set(&txn, msg("a/c", "other"))
	commit(t, l, &txn)
	// [MQTT-3.3.1-5] A new retained message replaces the old one.
	s.Set(&txn, msg("a/b", "two"))
	commit(t, l, &txn)
	if m, ok := s.Get("a/b"); !ok || string(m.Payload) != "two" {
		t.Fatalf("Get(a/b) = %v, %t, want payload two", m, ok)
	}
	if got := s.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2", got)
	}
	disk := onDisk(t, l)
	if len(disk) != 2 || string(disk["a/b"].Payload) != "two" {
		t.Fatalf("on disk: %v, want a/b=two and a/c", disk)
	}

	// [MQTT-3.3.1-10] [MQTT-3.3.1-11] An empty payload clears the topic
	// and is not itself retained.
	s.Set(&txn, msg("a/b", ""))
	commit(t, l, &txn)
	if m, ok := s.Get("a/b"); ok {
		t.Fatalf("Get(a/b) after clear = %v, want none", m)
	}
	if got := s.Len(); got != 1 {
		t.Fatalf("Len = %d, want 1", got)
	}
	if disk := onDisk(t, l); len(disk) != 1 || disk["a/c"].Topic != "a/c" {
		t.Fatalf("on disk after clear: %v, want only a/c", disk)
	}
	// Clearing a topic with nothing retained is harmless.
	s.Set(&txn, msg("x/y", ""))
	commit(t, l, &txn)
	if got := s.Len(); got != 1 {
		t.Fatalf("Len = %d, want 1", got)
	}
}

func TestLoadRebuilds(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs)
	s := New(l)
	var txn wal.Txn
	big := bytes.Repeat([]byte("compressible "), 1000)
	want := map[string]*wal.Message{
		"sport/tennis": msg("sport/tennis", "1"),
		"sport":        msg("sport", "2"),
		"$SYS/uptime":  msg("$SYS/uptime", "3"),
		"a//b":         msg("a//b", "4"),
		"big":          {Topic: "big", Payload: big, QoS: 2, Retain: true},
		"props": {
			Topic: "props", Payload: []byte("p"), ExpireAt: time.Now().Add(time.Hour).UnixMilli(),
			HasPayloadFormat: true, PayloadFormat: 1, ContentType: "text/plain",
			ResponseTopic: "reply/here", CorrelationData: []byte{1, 2},
			User: []wal.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "w"}},
		},
	}
	for _, m := range want {
		s.Set(&txn, m)
	}
	s.Set(&txn, msg("cleared", "x"))
	s.Set(&txn, msg("cleared", ""))
	commit(t, l, &txn)

	_, l2 := reopen(t, fs)
	s2, err := Load(l2, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Len(); got != len(want) {
		t.Fatalf("Len after Load = %d, want %d", got, len(want))
	}
	for topic, w := range want {
		got, ok := s2.Get(topic)
		if !ok {
			t.Errorf("Get(%q): not loaded", topic)
			continue
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("Get(%q) = %+v, want %+v", topic, got, w)
		}
	}
	if _, ok := s2.Get("cleared"); ok {
		t.Error("cleared topic came back after Load")
	}
	// The loaded set expires as the original did.
	if at, ok := s2.NextExpiry(); !ok || at != want["props"].ExpireAt {
		t.Errorf("NextExpiry = %d, %t, want %d, true", at, ok, want["props"].ExpireAt)
	}
}

func TestLoadSkipsAndDeletesExpired(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs)
	s := New(l)
	var txn wal.Txn
	now := time.Now().UnixMilli()
	for _, m := range []*wal.Message{
		{Topic: "gone/1", Payload: []byte("x"), ExpireAt: now - 1000},
		{Topic: "gone/2", Payload: []byte("x"), ExpireAt: 1},
		{Topic: "stays/later", Payload: []byte("x"), ExpireAt: now + time.Hour.Milliseconds()},
		{Topic: "stays/never", Payload: []byte("x")},
	} {
		s.Set(&txn, m)
	}
	commit(t, l, &txn)

	fs, l = reopen(t, fs)
	s, err := Load(l, now)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	s.Match("#", now, func(m *wal.Message) { got = append(got, m.Topic) })
	slices.Sort(got)
	if want := []string{"stays/later", "stays/never"}; !slices.Equal(got, want) {
		t.Fatalf("after Load: %q, want %q", got, want)
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	// The deletion was committed by Load: it survives a crash right after.
	_, l = reopen(t, fs)
	disk := onDisk(t, l)
	if _, ok := disk["gone/1"]; ok || len(disk) != 2 {
		t.Fatalf("on disk after Load: %d messages (gone/1 present: %t), want the 2 unexpired", len(disk), ok)
	}
}

func TestStoreMatch(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs)
	s := New(l)
	var txn wal.Txn
	for _, topic := range matchTopics {
		s.Set(&txn, msg(topic, "p"))
	}
	commit(t, l, &txn)
	_, l = reopen(t, fs)
	s, err := Load(l, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range matchTests {
		var got []string
		s.Match(tt.filter, 0, func(m *wal.Message) { got = append(got, m.Topic) })
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("Match(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
}

func TestExpire(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs)
	s := New(l)
	var txn wal.Txn
	s.Set(&txn, &wal.Message{Topic: "t/10", Payload: []byte("x"), ExpireAt: 10})
	s.Set(&txn, &wal.Message{Topic: "t/20", Payload: []byte("x"), ExpireAt: 20})
	s.Set(&txn, &wal.Message{Topic: "t/never", Payload: []byte("x")})
	commit(t, l, &txn)

	// Match skips what has expired before Expire runs.
	var got []string
	s.Match("t/+", 15, func(m *wal.Message) { got = append(got, m.Topic) })
	slices.Sort(got)
	if want := []string{"t/20", "t/never"}; !slices.Equal(got, want) {
		t.Fatalf("Match at 15 = %q, want %q", got, want)
	}
	if at, ok := s.NextExpiry(); !ok || at != 10 {
		t.Fatalf("NextExpiry = %d, %t, want 10, true", at, ok)
	}
	if n := s.Expire(&txn, 15); n != 1 {
		t.Fatalf("Expire(15) = %d, want 1", n)
	}
	commit(t, l, &txn)
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	if n := s.Expire(&txn, 15); n != 0 || txn.Len() != 0 {
		t.Fatalf("second Expire(15) = %d with %d writes, want 0, 0", n, txn.Len())
	}
	_, l = reopen(t, fs)
	disk := onDisk(t, l)
	if _, ok := disk["t/10"]; ok || len(disk) != 2 {
		t.Fatalf("on disk after Expire: %d messages (t/10 present: %t), want 2", len(disk), ok)
	}
}

// TestLenConcurrent reads Len from another goroutine while the owner
// updates the set, as $SYS does (run with -race).
func TestLenConcurrent(t *testing.T) {
	s := New(nil)
	var txn wal.Txn
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				if n := s.Len(); n < 0 || n > 100 {
					t.Errorf("Len = %d", n)
					return
				}
			}
		}
	})
	for i := range 1000 {
		s.Set(&txn, msg("t/"+string(rune('a'+i%26)), "x"))
		if i%3 == 0 {
			s.Set(&txn, msg("t/"+string(rune('a'+i%26)), ""))
		}
		txn.Reset()
	}
	close(stop)
	wg.Wait()
}
