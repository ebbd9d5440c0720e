package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble reads its MANIFEST up to the first invalid record and treats the
// rest as a torn tail, whatever follows. A torn tail is legitimate only in
// the last record (each version edit is synced before it takes effect), but
// a damaged record in the middle would make Pebble open an older version of
// the store and delete the newer tables as obsolete: silent loss of
// acknowledged data. checkManifest refuses that case before Pebble opens.
//
// The MANIFEST is written with Pebble's record.Writer: 32 KiB blocks of
// chunks, each with a 7-byte header
//
//	+----------------+------------+---------+--------------+
//	| crc (4, LE)    | len (2, LE)| type (1)| payload (len)|
//	+----------------+------------+---------+--------------+
//
// crc being Pebble's masked CRC-32C of type and payload, type 1..4 (full,
// first, middle, last). A block's tail shorter than a header is zero
// padding. If the first chunk does not parse this way (a future Pebble with
// another layout), the check stands aside and leaves the file to Pebble.
const (
	manifestBlock  = 32 << 10
	manifestHeader = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func maskedCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b)
	return (c>>15 | c<<17) + 0xa282ead8
}

// chunkAt reports whether a valid chunk starts at off and returns its end.
func chunkAt(b []byte, off int) (int, bool) {
	blockEnd := min((off/manifestBlock+1)*manifestBlock, len(b))
	if off+manifestHeader > blockEnd {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint16(b[off+4:]))
	typ := b[off+6]
	end := off + manifestHeader + n
	if typ < 1 || typ > 4 || end > blockEnd {
		return 0, false
	}
	if maskedCRC(b[off+6:end]) != binary.LittleEndian.Uint32(b[off:]) {
		return 0, false
	}
	return end, true
}

// manifestDamage returns the offset of a damaged chunk that a valid chunk
// follows, or -1.
func manifestDamage(b []byte) int {
	off := 0
	for off < len(b) {
		if left := manifestBlock - off%manifestBlock; left < manifestHeader {
			off += left // zero padding at a block's end
			continue
		}
		end, ok := chunkAt(b, off)
		if !ok {
			break
		}
		off = end
	}
	if off == 0 || off >= len(b) {
		return -1 // unknown layout, or clean to the end
	}
	for p := off + 1; p+manifestHeader <= len(b); p++ {
		if _, ok := chunkAt(b, p); ok {
			return off
		}
	}
	return -1 // a torn tail
}

// checkManifest refuses a data directory whose current MANIFEST is damaged
// before its end.
func checkManifest(fs vfs.FS, dir string) error {
	desc, err := pebble.Peek(dir, fs)
	if err != nil || !desc.Exists {
		return nil // nothing there yet, or let pebble.Open report it
	}
	f, err := fs.Open(desc.ManifestFilename)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", dir, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("wal: open %s: read %s: %w", dir, desc.ManifestFilename, err)
	}
	if off := manifestDamage(b); off >= 0 {
		return fmt.Errorf("wal: open: data directory %s is corrupt: %s is damaged at offset %d "+
			"with valid records after it; restore it from a backup, or move it aside to start empty",
			dir, desc.ManifestFilename, off)
	}
	return nil
}
