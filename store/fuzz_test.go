package store

import (
	"bytes"
	"os"
	"testing"
)

// Fuzzers for the decoders of untrusted datastore files. Properties: no
// panic, bounded work, and whatever parses can be written again and
// parses to the same thing.

func FuzzBlobDecode(f *testing.F) {
	c := NewCodec()
	for _, s := range []string{
		"42ab3807be8370a186a6103668656c6c6f",
		"31b958426fb6a37fd3b9d7f328b52ffd60e8024d00001061610100e32b8005",
		"7b6785be222d4cf0784eea93000102030405060708090a0b0c0d0e0f0c84c431837297c0b19e77e5608162ea0f09cc1a56",
	} {
		f.Add(unhex(f, s))
	}
	big, _ := c.Encode(bytes.Repeat([]byte("pbsfs "), 5000), true)
	f.Add(big)
	f.Fuzz(func(t *testing.T, b []byte) {
		data, err := c.Decode(b)
		if err != nil {
			return
		}
		re, err := c.Encode(data, true)
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Decode(re)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("re-encoded blob decodes differently: %v", err)
		}
	})
}

func FuzzFixedIndex(f *testing.F) {
	f.Add((&FixedIndex{size: 6 << 20, chunkSize: 4 << 20, digests: make([]Digest, 2)}).MarshalBinary())
	f.Add((&FixedIndex{size: 0, chunkSize: 4 << 20}).MarshalBinary())
	f.Add((&FixedIndex{size: 100, chunkSize: 64, digests: make([]Digest, 2)}).MarshalBinary())
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := ParseFixedIndex(b)
		if err != nil {
			return
		}
		y, err := ParseFixedIndex(x.MarshalBinary())
		if err != nil || y.Checksum() != x.Checksum() || y.Size() != x.Size() {
			t.Fatalf("re-parse: %v", err)
		}
		checkLocate(t, x)
	})
}

func FuzzDynamicIndex(f *testing.F) {
	f.Add((&DynamicIndex{ends: []uint64{5, 11}, digests: make([]Digest, 2)}).MarshalBinary())
	f.Add((&DynamicIndex{}).MarshalBinary())
	if b, err := os.ReadFile("testdata/pbs-client/backup-client-pxar-data.ppxar.didx"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := ParseDynamicIndex(b)
		if err != nil {
			return
		}
		y, err := ParseDynamicIndex(x.MarshalBinary())
		if err != nil || y.Checksum() != x.Checksum() || y.Size() != x.Size() {
			t.Fatalf("re-parse: %v", err)
		}
		checkLocate(t, x)
	})
}

// checkLocate checks that Locate agrees with Chunk at every chunk edge.
func checkLocate(t *testing.T, x Index) {
	for i := range min(x.Len(), 64) {
		_, start, end := x.Chunk(i)
		for _, off := range []uint64{start, end - 1} {
			j, in, err := x.Locate(off)
			if err != nil || j != i || in != off-start {
				t.Fatalf("Locate(%d) = %d, %d, %v; want chunk %d [%d,%d)", off, j, in, err, i, start, end)
			}
		}
	}
	if _, _, err := x.Locate(x.Size()); err == nil {
		t.Fatal("Locate(size) succeeded")
	}
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"backup-type":"vm","backup-id":"100","backup-time":1718000000,"files":[{"filename":"drive-scsi0.img.fidx","crypt-mode":"none","size":6291456,"csum":"4c038ad982f42733f8cf5de38af46a51c822e758fd72497bc1187040bb42f5ca"}],"unprotected":{"notes":"hi\nthere","verify_state":{"upid":"x","state":"ok"}},"signature":null}`))
	f.Add([]byte(`{"backup-type":"host","backup-id":"elsa","backup-time":1,"files":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		js, err := m.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(js)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", js, err)
		}
		js2, _ := m2.MarshalJSON()
		if !bytes.Equal(js, js2) {
			t.Fatalf("not stable:\n%s\n%s", js, js2)
		}
	})
}
