package quorum

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/keelmq/keel/wal"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestTCPCluster: three nodes on loopback TCP with real ticks elect a
// leader, commit through it, and every node applies what it acked.
func TestTCPCluster(t *testing.T) {
	ids := []uint64{1, 2, 3}
	lns := map[uint64]net.Listener{}
	addrs := map[uint64]string{}
	for _, id := range ids {
		lns[id] = listen(t)
		addrs[id] = lns[id].Addr().String()
	}
	nodes := map[uint64]*Node{}
	for _, id := range ids {
		n, err := Start(Config{ID: id, Peers: ids, Dir: "d", FS: vfs.NewMem(), Logger: quiet,
			Transport: NewTCP(id, lns[id], addrs, quiet), TickInterval: 10 * time.Millisecond,
			// Generous timeouts: the machine is shared and runs -race.
			ElectionTicks: 100, HeartbeatTicks: 5})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		defer n.Close()
	}
	ctx := waitCtx(t)
	type res struct {
		id uint64
		s  *Store
	}
	won := make(chan res, len(ids))
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, id := range ids {
		go func() {
			if s, err := nodes[id].Leader(lctx); err == nil {
				won <- res{id, s}
			}
		}()
	}
	var r res
	select {
	case r = <-won:
	case <-ctx.Done():
		t.Fatal("no leader over TCP")
	}
	cancel()
	h := newHistory()
	for id := range 50 {
		if err := wal.Commit(ctx, r.s, h.txn(id)); err != nil {
			t.Fatalf("txn %d on leader %d: %v", id, r.id, err)
		}
	}
	want := nodes[r.id].Status().Applied
	for _, id := range ids {
		for nodes[id].Status().Applied < want { // a condition; heartbeats carry the commit
			select {
			case <-ctx.Done():
				t.Fatalf("node %d applied %d, want %d", id, nodes[id].Status().Applied, want)
			case <-time.After(5 * time.Millisecond):
			}
		}
		for tid := range 50 {
			if !present(t, nodes[id].Applied(), tid) {
				t.Fatalf("node %d lacks txn %d", id, tid)
			}
		}
	}
}

// TestTCPRefusesGarbage: a connection that does not speak the protocol,
// or sends an oversized frame, is closed; the transport goes on.
func TestTCPRefusesGarbage(t *testing.T) {
	ln := listen(t)
	got := make(chan uint64, 1)
	tr := NewTCP(1, ln, map[uint64]string{1: ln.Addr().String(), 2: "127.0.0.1:1"}, quiet)
	if err := tr.Start(func(m *pb.Message) { got <- m.GetFrom() }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	closed := func(c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after garbage: err %v, want EOF (closed by the transport)", err)
		}
		c.Close()
	}
	for _, hello := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(append([]byte("KQR1"), binary.BigEndian.AppendUint64(nil, 9)...), 0, 0, 0, 1, 0), // unknown node
		append(append([]byte("KQR1"), binary.BigEndian.AppendUint64(nil, 2)...), 0xff, 0xff, 0xff, 0xff),
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		closed(c)
	}
	// A well-formed connection still gets through.
	peer := NewTCP(2, listen(t), map[uint64]string{1: ln.Addr().String()}, quiet)
	if err := peer.Start(func(*pb.Message) {}); err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peer.Send([]*pb.Message{{From: new(uint64(2)), To: new(uint64(1))}})
	select {
	case from := <-got:
		if from != 2 {
			t.Fatalf("message from %d, want 2", from)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
	}
}
