package pxar

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// entryV1Archive builds by hand a plain archive whose entries use the old
// ENTRY_V1 layout (spec §5.4): a root directory with file "a" = "hi".
func entryV1Archive() []byte {
	var b []byte
	u64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	u32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	statV1 := func(mode uint64, ns uint64) {
		u64(typeEntryV1)
		u64(headerSize + statV1Size)
		u64(mode)
		u64(0)
		u32(1000)
		u32(100)
		u64(ns)
	}
	statV1(0o40755, 1_500_000_000) // @0
	u64(typeFilename)              // @48
	u64(18)
	b = append(b, 'a', 0)
	statV1(0o100644, 1_700_000_000_123_456_789) // @66
	u64(typePayload)                            // @114
	u64(18)
	b = append(b, 'h', 'i')
	u64(typeGoodbye) // @132
	u64(64)
	u64(hashName("a"))
	u64(132 - 48)
	u64(18 + 48 + 18)
	u64(goodbyeTailMarker)
	u64(132)
	u64(64)
	return b
}

func TestEntryV1(t *testing.T) {
	meta := entryV1Archive()
	d := NewDecoder(bytes.NewReader(meta), int64(len(meta)), nil)
	root, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	if root.Kind != KindDir || root.Mtime != (Timestamp{Secs: 1, Nanos: 500000000}) || root.UID != 1000 || root.GID != 100 {
		t.Errorf("root %+v", root)
	}
	a, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := io.ReadAll(d)
	if a.Path != "/a" || a.Kind != KindFile || string(c) != "hi" || a.Mtime != (Timestamp{Secs: 1700000000, Nanos: 123456789}) {
		t.Errorf("a %+v %q", a, c)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
	ar, err := Open(bytes.NewReader(meta), int64(len(meta)), nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ar.Lookup("a")
	if err != nil || e.Offset != 66 || e.End != 132 {
		t.Fatalf("lookup: %+v %v", e, err)
	}
}
