package wal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func opsOf(t *Txn) string {
	var b bytes.Buffer
	t.Ops(func(op TxnOp) { fmt.Fprintf(&b, "%c %q %q;", op.Kind, op.Key, op.Value) })
	return b.String()
}

func TestTxnRecordRoundTrip(t *testing.T) {
	var in Txn
	in.Set([]byte("a"), []byte("1"))
	in.DeleteRange([]byte("a"), []byte("b"))
	in.Set([]byte("a"), nil)
	in.Delete([]byte("zz"))
	in.Set([]byte{}, bytes.Repeat([]byte("x"), 300))
	rec := AppendTxn([]byte("head"), &in)
	rec = append(rec, "tail"...)

	var out Txn
	rest, err := DecodeTxn(rec[len("head"):], &out)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "tail" {
		t.Fatalf("rest = %q, want %q", rest, "tail")
	}
	if got, want := opsOf(&out), opsOf(&in); got != want {
		t.Fatalf("decoded ops:\n got %s\nwant %s", got, want)
	}

	var empty Txn
	rest, err = DecodeTxn(AppendTxn(nil, &empty), &out)
	if err != nil || len(rest) != 0 || out.Len() != in.Len() {
		t.Fatalf("empty txn: rest %q err %v len %d", rest, err, out.Len())
	}
}

func TestTxnRecordCorrupt(t *testing.T) {
	var in Txn
	in.Set([]byte("key"), []byte("value"))
	in.DeleteRange([]byte("a"), []byte("b"))
	in.Delete([]byte("k2"))
	rec := AppendTxn(nil, &in)
	for n := range len(rec) {
		var out Txn
		out.Set([]byte("keep"), nil)
		if _, err := DecodeTxn(rec[:n], &out); !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("truncated to %d bytes: err %v, want ErrCorruptRecord", n, err)
		}
		if out.Len() != 1 {
			t.Fatalf("truncated to %d bytes: txn has %d ops after a failed decode, want 1", n, out.Len())
		}
	}
	bad := append([]byte(nil), rec...)
	bad[1] = 9 // the first op's kind
	if _, err := DecodeTxn(bad, new(Txn)); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("unknown kind: err %v, want ErrCorruptRecord", err)
	}
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := DecodeTxn(huge, new(Txn)); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("huge count: err %v, want ErrCorruptRecord", err)
	}
}
