package store

import "sync"

// Compressibility probe of new chunks.
//
// PBS keeps the zstd form of a chunk only when it is shorter than the
// data (§2.4), so trying to compress incompressible data (media, archives,
// encrypted files, random disk areas) costs a full zstd pass for nothing:
// on one core that pass cost about as much as the SHA-256 of the chunk.
// Before compressing a large chunk, the writer compresses probeSamples
// samples of probeSample bytes spread evenly over it (1.6 % of a 4 MiB
// chunk); when they save less than 1/32 of their size, the chunk is stored
// uncompressed, a valid PBS blob either way. What the probe can miss is
// compressible data in runs shorter than the sample spacing (256 KiB in a
// 4 MiB chunk) between random samples, or redundancy only at distances
// beyond one sample; such a chunk is stored larger than it could be, never
// wrong.
const (
	probeSamples = 16
	probeSample  = 4 << 10
	// probeMin is the smallest chunk probed: below it the whole chunk is
	// simply tried.
	probeMin = 256 << 10
)

var probeBufs = sync.Pool{New: func() any { b := make([]byte, 0, probeSample+512); return &b }}

// worthCompressing reports whether compressing data may shorten it.
func (c *Codec) worthCompressing(data []byte) bool {
	if len(data) < probeMin {
		return true
	}
	bp := probeBufs.Get().(*[]byte)
	defer probeBufs.Put(bp)
	saved := 0
	step := (len(data) - probeSample) / (probeSamples - 1)
	for i := range probeSamples {
		off := i * step
		out := c.enc.EncodeAll(data[off:off+probeSample], (*bp)[:0])
		saved += probeSample - len(out)
		*bp = out[:0]
	}
	return saved*32 > probeSamples*probeSample
}
