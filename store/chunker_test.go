package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"testing"
)

// xorshiftBytes is the xorshift64* generator of spec §10.7.
func xorshiftBytes(seed uint64, n int) []byte {
	out := make([]byte, 0, n+8)
	x := seed
	for len(out) < n {
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		out = binary.LittleEndian.AppendUint64(out, x*0x2545F4914F6CDD1D)
	}
	return out[:n]
}

func chunkEnds(t testing.TB, data []byte, avg, piece int) []int {
	c, err := NewChunker(avg)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int
	pos, start := 0, 0
	for start < len(data) {
		end := min(start+piece, len(data))
		p := data[start:end]
		for len(p) > 0 {
			n, cut := c.Scan(p)
			pos += n
			p = p[n:]
			if cut {
				ends = append(ends, pos)
			}
		}
		start = end
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		if len(data) > 0 {
			ends = append(ends, len(data))
		}
	}
	return ends
}

func TestChunkerVectors(t *testing.T) {
	tableSum := sha256.New()
	for _, v := range buzhashTable {
		binary.Write(tableSum, binary.LittleEndian, v)
	}
	if got := tableSum.Sum(nil); string(hexs(got)) != "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660" {
		t.Fatalf("buzhash table sha256 %x", got)
	}
	seqA := make([]byte, 1<<20)
	for i := range 262144 {
		binary.LittleEndian.PutUint32(seqA[4*i:], uint32(i))
	}
	tests := []struct {
		name string
		data []byte
		avg  int
		want []int
	}{
		{"A", seqA, 64 << 10, []int{143377, 405521, 667665, 929809, 1048576}},
		{"B", xorshiftBytes(0x0123456789abcdef, 1<<20), 64 << 10, []int{45060, 83527, 112629, 155566, 229821, 272174, 445667, 538389, 609997, 639298, 658456, 746654, 767600, 833305, 890109, 942972, 984330, 1001158, 1020613, 1048576}},
		{"C", xorshiftBytes(42, 64<<20), 4 << 20, []int{2790780, 5126000, 10980623, 13247129, 16983179, 19128104, 20325259, 24852893, 26601323, 29162785, 34087140, 38171781, 48119725, 49696202, 50787028, 52829927, 55394287, 67108864}},
		{"Z", make([]byte, 300000), 64 << 10, []int{262144, 300000}},
		{"empty", nil, 64 << 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, piece := range []int{1 << 30, 1, 7, 4096, 65536 + 13} {
				if piece == 1 && len(tc.data) > 2<<20 {
					continue
				}
				if got := chunkEnds(t, tc.data, tc.avg, piece); !slices.Equal(got, tc.want) {
					t.Fatalf("pieces of %d: ends %v, want %v", piece, got, tc.want)
				}
			}
		})
	}
}

func TestNewChunkerRejects(t *testing.T) {
	for _, avg := range []int{0, 100, 3 << 20, 128 << 20} {
		if _, err := NewChunker(avg); err == nil {
			t.Errorf("NewChunker(%d) accepted", avg)
		}
	}
}

// referenceCuts is §8 written as plainly as possible, byte by byte.
func referenceCuts(data []byte, avg int) []int {
	minN, maxN := avg/4, avg*4
	mask := uint32(2*avg - 1)
	var ends []int
	var h uint32
	var win [64]byte
	n, wn := 0, 0
	for pos, b := range data {
		if wn < 64 {
			win[wn] = b
			wn++
			n++
			h = h<<1 | h>>31
			h ^= buzhashTable[b]
		} else {
			i := n % 64
			h = (h<<1 | h>>31) ^ buzhashTable[win[i]] ^ buzhashTable[b]
			win[i] = b
			n++
			if n >= maxN || n >= minN && h&mask >= mask-2 {
				ends = append(ends, pos+1)
				h, n, wn = 0, 0, 0
			}
		}
	}
	if len(data) > 0 && (len(ends) == 0 || ends[len(ends)-1] != len(data)) {
		ends = append(ends, len(data))
	}
	return ends
}

// FuzzChunker compares the optimised chunker, fed in pieces, with the
// plain reference on small averages so cuts are frequent.
func FuzzChunker(f *testing.F) {
	f.Add([]byte("seed"), uint8(0), uint16(7))
	f.Add(xorshiftBytes(3, 5000), uint8(2), uint16(100))
	f.Add(make([]byte, 3000), uint8(1), uint16(64))
	f.Fuzz(func(t *testing.T, seed []byte, avgShift uint8, piece uint16) {
		avg := 256 << (avgShift % 3)
		data := bytes.Repeat(seed, 1+8*avg/(len(seed)+1))
		if len(data) > 1<<16 {
			data = data[:1<<16]
		}
		want := referenceCuts(data, avg)
		if got := chunkEnds(t, data, avg, int(piece%4096)+1); !slices.Equal(got, want) {
			t.Fatalf("avg %d pieces %d: %v, want %v", avg, piece%4096+1, got, want)
		}
	})
}
