package engine

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/keelmq/keel/engine/packet"
)

// faultInjector fails every write and sync with err while on.
func faultInjector(err error) *errorfs.Toggle {
	return &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData,
			errorfs.OpFileSyncTo, errorfs.OpCreate:
			return err
		}
		return nil
	})}
}

// An I/O error or a full disk during a commit: nothing in the failed batch
// is acknowledged (5.0 gets 0x80, 3.1.1 is disconnected without an ack),
// the broker signals Failed, and everything acknowledged before is found
// after reopening the store.
func TestCommitFailureNeverAcks(t *testing.T) {
	for _, fault := range []error{syscall.EIO, syscall.ENOSPC} {
		t.Run(fmt.Sprintf("err=%v", fault), func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			toggle := faultInjector(fault)
			tb := &testBroker{t: t, fs: errorfs.Wrap(mem, toggle), dir: "data"}
			tb.start()
			t.Cleanup(tb.stop)

			sub := dialRaw(t, tb.addr, packet.V5)
			sub.connect("s", false, nil)
			sub.subscribe(1, "f/#", 1)
			sub.send(&packet.Disconnect{})

			p5 := dialRaw(t, tb.addr, packet.V5)
			p5.connect("p5", true, nil)
			p3 := dialRaw(t, tb.addr, packet.V311)
			p3.connect("p3", true, nil)
			p5.publish(1, "f/a", 1, "before-5")
			p5.expectAck(packet.PUBACK, 1)
			p3.publish(1, "f/b", 1, "before-3")
			p3.expectAck(packet.PUBACK, 1)

			toggle.On()
			p5.publish(2, "f/a", 1, "during-5")
			a := p5.expectAck(packet.PUBACK, 2)
			if a.ReasonCode < 0x80 {
				t.Fatalf("PUBACK reason %v during a store fault, want an error code (>= 0x80)", a.ReasonCode)
			}
			p3.publish(2, "f/b", 1, "during-3")
			if p := p3.expectClosed(); p != nil {
				t.Fatalf("3.1.1 client got %T %+v during a store fault, want the connection closed without an ack", p, p)
			}
			select {
			case <-tb.b.Failed():
			case <-time.After(5 * time.Second):
				t.Fatal("Failed() not signalled after a failed commit")
			}
			if !errors.Is(tb.b.Err(), fault) && tb.b.Err() == nil {
				t.Fatalf("Err() = nil, want the commit error")
			}
			// Still nothing acknowledged while the store is failed.
			p5.publish(3, "f/a", 1, "after-5")
			if a := p5.expectAck(packet.PUBACK, 3); a.ReasonCode < 0x80 {
				t.Fatalf("PUBACK reason %v after the failure, want an error code", a.ReasonCode)
			}

			// Restart on the same files once the fault has cleared.
			tb.stop()
			toggle.Off()
			tb.fs = mem
			tb.start()
			sub = dialRaw(t, tb.addr, packet.V5)
			if !sub.connect("s", false, nil).SessionPresent {
				t.Fatal("session lost")
			}
			got := map[string]bool{}
			for {
				p, err := sub.tryRecv(500 * time.Millisecond)
				if err != nil {
					break
				}
				if pub, ok := p.(*packet.Publish); ok {
					got[string(pub.Payload)] = true
					sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
				}
			}
			for _, want := range []string{"before-5", "before-3"} {
				if !got[want] {
					t.Errorf("acknowledged message %q lost; got %v", want, got)
				}
			}
		})
	}
}
