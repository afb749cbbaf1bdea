package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// BlobKind is the kind of a DataBlob, given by its magic (§2.1).
type BlobKind int

// Blob kinds.
const (
	BlobUncompressed BlobKind = iota + 1
	BlobCompressed
	BlobEncrypted
	BlobEncryptedCompressed
)

// Encrypted reports whether blobs of kind k carry ciphertext.
func (k BlobKind) Encrypted() bool { return k == BlobEncrypted || k == BlobEncryptedCompressed }

func (k BlobKind) String() string {
	switch k {
	case BlobUncompressed:
		return "uncompressed"
	case BlobCompressed:
		return "zstd"
	case BlobEncrypted:
		return "encrypted"
	case BlobEncryptedCompressed:
		return "encrypted+zstd"
	}
	return "unknown"
}

// BlobKindOf returns the kind of the encoded blob b, judged by its magic
// alone, or an ErrCorrupt error when b is too short or the magic is unknown.
func BlobKindOf(b []byte) (BlobKind, error) {
	if len(b) < blobHeaderSize {
		return 0, fmt.Errorf("blob of %d bytes, shorter than its header: %w", len(b), ErrCorrupt)
	}
	var m [8]byte
	copy(m[:], b)
	switch m {
	case magicUncompressed:
		return BlobUncompressed, nil
	case magicCompressed:
		return BlobCompressed, nil
	case magicEncrypted, magicEncrCompr:
		if len(b) < encryptedBlobHeaderSize {
			return 0, fmt.Errorf("encrypted blob of %d bytes, shorter than its header: %w", len(b), ErrCorrupt)
		}
		if m == magicEncrypted {
			return BlobEncrypted, nil
		}
		return BlobEncryptedCompressed, nil
	}
	return 0, fmt.Errorf("blob magic %x unknown: %w", m[:], ErrCorrupt)
}

// Codec encodes and decodes DataBlobs. It is safe for concurrent use; one
// is shared by everything that works on a store.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec returns a Codec compressing with zstd level 1 (§2.4).
func NewCodec() *Codec {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		// Each concurrent encoder keeps a history buffer; the low-memory
		// form sizes it to the window plus one block (about 8 MiB instead
		// of 16) with the same output.
		zstd.WithLowerEncoderMem(true),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false)) // libzstd, as PBS uses it, writes no frame checksum
	if err != nil {
		panic(err) // only fails on invalid options
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxChunkSize),
		zstd.WithDecoderMaxWindow(maxChunkSize))
	if err != nil {
		panic(err)
	}
	return &Codec{enc: enc, dec: dec}
}

// Encode returns data as an unencrypted DataBlob. With compress set, the
// zstd form is kept only when it is strictly shorter than data (§2.4).
func (c *Codec) Encode(data []byte, compress bool) ([]byte, error) {
	return c.AppendEncode(nil, data, compress)
}

// AppendEncode is Encode appending to dst.
func (c *Codec) AppendEncode(dst, data []byte, compress bool) ([]byte, error) {
	if len(data) > MaxBlobSize {
		return nil, fmt.Errorf("blob of %d bytes: %w", len(data), ErrTooLarge)
	}
	start := len(dst)
	if compress {
		dst = append(dst, magicCompressed[:]...)
		dst = append(dst, 0, 0, 0, 0)
		dst = c.enc.EncodeAll(data, dst)
		if len(dst)-start-blobHeaderSize < len(data) {
			binary.LittleEndian.PutUint32(dst[start+8:], crc32.ChecksumIEEE(dst[start+blobHeaderSize:]))
			return dst, nil
		}
		dst = dst[:start]
	}
	dst = append(dst, magicUncompressed[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(data))
	return append(dst, data...), nil
}

// Decode checks the CRC of the blob b and returns its decoded content.
// Encrypted blobs give an ErrEncrypted error.
func (c *Codec) Decode(b []byte) ([]byte, error) {
	return c.AppendDecode(nil, b)
}

// AppendDecode is Decode appending the content to dst.
func (c *Codec) AppendDecode(dst, b []byte) ([]byte, error) {
	kind, err := BlobKindOf(b)
	if err != nil {
		return nil, err
	}
	if err := checkBlobCRC(b, kind); err != nil {
		return nil, err
	}
	switch kind {
	case BlobUncompressed:
		return append(dst, b[blobHeaderSize:]...), nil
	case BlobCompressed:
		out, err := c.dec.DecodeAll(b[blobHeaderSize:], dst)
		if err != nil {
			return nil, fmt.Errorf("zstd payload: %v: %w", err, ErrCorrupt)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s blob: %w", kind, ErrEncrypted)
}

// DecodeLimit is Decode for a blob whose content may not exceed max bytes
// (a manifest: MaxManifestSize). Larger content is ErrTooLarge, found
// without holding more than about 1.5 × max bytes: compressed payloads
// are decoded as a stream into a buffer that never grows past max+1, so
// a small hostile blob that inflates to gigabytes costs little.
func (c *Codec) DecodeLimit(b []byte, max int) ([]byte, error) {
	kind, err := BlobKindOf(b)
	if err != nil {
		return nil, err
	}
	if err := checkBlobCRC(b, kind); err != nil {
		return nil, err
	}
	payload := b[blobHeaderSize:]
	switch kind {
	case BlobUncompressed:
		if len(payload) > max {
			return nil, fmt.Errorf("blob content of %d bytes, limit %d: %w", len(payload), max, ErrTooLarge)
		}
		return append([]byte(nil), payload...), nil
	case BlobCompressed:
		return decodeLimit(payload, max)
	}
	return nil, fmt.Errorf("%s blob: %w", kind, ErrEncrypted)
}

func decodeLimit(payload []byte, max int) ([]byte, error) {
	window := uint64(max)
	if window < zstd.MinWindowSize {
		window = zstd.MinWindowSize
	}
	dec, err := zstd.NewReader(bytes.NewReader(payload), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(max)+1), zstd.WithDecoderMaxWindow(window))
	if err != nil {
		return nil, fmt.Errorf("zstd payload: %v: %w", err, ErrCorrupt)
	}
	defer dec.Close()
	out := make([]byte, 0, min(max+1, 4*len(payload)+512))
	tooLarge := fmt.Errorf("blob content over %d bytes: %w", max, ErrTooLarge)
	for {
		if len(out) == cap(out) {
			if len(out) > max {
				return nil, tooLarge
			}
			grown := make([]byte, len(out), min(2*cap(out), max+1))
			copy(grown, out)
			out = grown
		}
		n, err := dec.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			break
		}
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, tooLarge
		}
		if err != nil {
			return nil, fmt.Errorf("zstd payload: %v: %w", err, ErrCorrupt)
		}
	}
	if len(out) > max {
		return nil, tooLarge
	}
	return out, nil
}

// checkBlobCRC compares the CRC-32/IEEE of the payload with the header (§2.3).
func checkBlobCRC(b []byte, kind BlobKind) error {
	hdr := blobHeaderSize
	if kind.Encrypted() {
		hdr = encryptedBlobHeaderSize
	}
	want := binary.LittleEndian.Uint32(b[8:12])
	if got := crc32.ChecksumIEEE(b[hdr:]); got != want {
		return fmt.Errorf("blob crc %08x, header says %08x: %w", got, want, ErrCorrupt)
	}
	return nil
}

// VerifyBlobCRC checks the magic and CRC of an encoded blob without decoding it.
func VerifyBlobCRC(b []byte) (BlobKind, error) {
	kind, err := BlobKindOf(b)
	if err != nil {
		return 0, err
	}
	return kind, checkBlobCRC(b, kind)
}
