package sessions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/keelmq/keel/wal"
)

// BenchmarkLoad measures replay of persistent sessions: 1,000 sessions
// with 200 queued messages each.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	l, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const sessions, perSession = 1000, 200
	txn := &wal.Txn{}
	seq := uint64(1)
	for s := 0; s < sessions; s++ {
		id := fmt.Sprintf("device-%05d", s)
		txn.Set(wal.SessionKey(id), wal.AppendSession(nil, (&Session[*owner]{Protocol: 4, Expiry: NeverExpire}).record(), 0))
		for m := 0; m < perSession; m++ {
			seq++
			e := &wal.Entry{QoS: 1, Inline: &wal.Message{Topic: "devices/" + id, Payload: make([]byte, 64), QoS: 1}}
			txn.Set(wal.QueueKey(id, seq), wal.AppendEntry(nil, e, 0))
		}
		if txn.Len() > 20000 {
			if err := l.Commit(context.Background(), txn); err != nil {
				b.Fatal(err)
			}
			txn = &wal.Txn{}
		}
	}
	if err := l.Commit(context.Background(), txn); err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ReportAllocs()
	for b.Loop() {
		st, err := Load[*owner](l, logger, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if len(st.Sessions) != sessions {
			b.Fatalf("got %d sessions, want %d", len(st.Sessions), sessions)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(sessions*perSession), "ns/entry")
}
