package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbsfs/pbsfs/store/crypto"
	"golang.org/x/sys/unix"
)

// VerifyOptions configure a Verifier.
type VerifyOptions struct {
	// Record writes the result into each snapshot's manifest as
	// unprotected.verify_state (under the manifest lock), and renames
	// corrupt chunks to <digest>.<n>.bad, as PBS's verify does (§9.2).
	// Without it a Verifier only reports.
	Record bool
	// IgnoreVerified skips snapshots whose last verify passed, unless it
	// is older than OutdatedAfter (0: never outdated).
	IgnoreVerified bool
	OutdatedAfter  time.Duration
	// Workers is the number of goroutines checking chunks (GOMAXPROCS if 0).
	Workers int
	// UPID names this verify run in verify_state; one is made if empty.
	UPID string
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Verifier checks snapshots as PBS's verify does (§9.2). Each distinct
// chunk is checked once per Verifier, across all the snapshots it sees.
type Verifier struct {
	s    *Store
	opts VerifyOptions
	mu   sync.Mutex
	seen map[Digest]error

	// Chunks and Bytes count the chunks checked and their decoded bytes.
	Chunks, Bytes atomic.Int64
}

// NewVerifier returns a Verifier for the store.
func (s *Store) NewVerifier(opts VerifyOptions) *Verifier {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.UPID == "" {
		opts.UPID = makeUPID(s.name, "verificationjob", opts.Now())
	}
	return &Verifier{s: s, opts: opts, seen: map[Digest]error{}}
}

// makeUPID returns a PBS task id: UPID:node:pid:pstart:task:start:type:id:user:.
func makeUPID(storeName, typ string, now time.Time) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%08X:%s:%s:root@pam:", host, os.Getpid(), 0, 0, now.Unix(), typ, storeName)
}

// upidStart returns the start time recorded in a UPID, its sixth
// colon-separated field in hex.
func upidStart(upid string) (time.Time, bool) {
	f := strings.Split(upid, ":")
	if len(f) < 6 || f[0] != "UPID" {
		return time.Time{}, false
	}
	start, err := strconv.ParseUint(f[5], 16, 32)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(start), 0), true
}

// VerifyReport is the outcome of checking one snapshot.
type VerifyReport struct {
	Ref SnapshotRef
	// Skipped tells why a snapshot was not checked: it is locked
	// exclusively, vanished, or was verified recently. Skipped snapshots
	// count as ok, as in PBS.
	Skipped string
	// Files counts the archives checked, Chunks the chunks checked for
	// this snapshot (chunks checked earlier in the run are not counted).
	Files, Chunks int
	// Keyed reports that the snapshot's key was at hand, so encrypted
	// data was decrypted and its keyed digests checked.
	Keyed bool
	// Problems lists every failed check, each naming its file or digest.
	Problems []error
}

// OK reports whether every check passed.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifySnapshot checks snapshot ref without recording anything: each
// blob's size, SHA-256 and CRC; each index's checksum and size against the
// manifest; and each distinct chunk's CRC, digest and length.
func (s *Store) VerifySnapshot(ctx context.Context, ref SnapshotRef) (*VerifyReport, error) {
	return s.NewVerifier(VerifyOptions{}).Verify(ctx, ref)
}

// Verify checks snapshot ref under a shared snapshot lock. With Record
// set, the result goes into the manifest and corrupt chunks are renamed.
// The error is for failures of the run itself (cancellation); what is
// wrong with the snapshot is in the report.
func (v *Verifier) Verify(ctx context.Context, ref SnapshotRef) (*VerifyReport, error) {
	s, g := v.s, ref.Group
	r := &VerifyReport{Ref: ref}
	sl, err := s.locks.LockSnapshot(g.NS.Components(), g.Type, g.ID, ref.TimeString(), false)
	if err != nil {
		r.Skipped = fmt.Sprintf("cannot lock: %v", err)
		return r, nil
	}
	defer sl.Unlock()
	if ok, _ := exists(s.Path(ref.Dir())); !ok {
		r.Skipped = "vanished"
		return r, nil
	}
	m, err := s.LoadManifest(ref)
	if err != nil {
		r.Problems = append(r.Problems, err)
		return r, nil
	}
	if v.opts.IgnoreVerified {
		if st, ok := m.Verify(); ok && st.State == "ok" {
			start, ok := upidStart(st.UPID)
			if v.opts.OutdatedAfter == 0 || ok && v.opts.Now().Sub(start) <= v.opts.OutdatedAfter {
				r.Skipped = "verified recently"
				return r, nil
			}
		}
	}
	// With the key the manifest names, the signature is checked and
	// encrypted data fully decoded; without it, encrypted chunks get the
	// checks PBS's verify makes (CRC, and size where it shows).
	key, err := s.SnapshotKey(m)
	if errors.Is(err, errNoKeyMatch) {
		err = nil // a key not at hand, as for a manifest naming one
	}
	if err != nil {
		r.Problems = append(r.Problems, fmt.Errorf("%s: %w", s.Path(path.Join(ref.Dir(), ManifestName)), err))
	}
	r.Keyed = key != nil
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		r.Files++
		p := s.Path(path.Join(ref.Dir(), f.Filename))
		switch KindOf(f.Filename) {
		case KindBlob:
			if err := s.verifyBlobFile(p, f, key); err != nil {
				r.Problems = append(r.Problems, err)
			}
		case KindFixed, KindDynamic:
			dec := s.plain
			if f.CryptMode == CryptEncrypt {
				dec = &ChunkDecoder{codec: s.codec, key: key, encrypted: true}
			}
			if err := v.verifyIndex(ctx, r, p, f, dec); err != nil {
				return r, err
			}
		}
	}
	if v.opts.Record {
		state := VerifyState{UPID: v.opts.UPID, State: "ok"}
		if !r.OK() {
			state.State = "failed"
		}
		err := s.UpdateManifest(ctx, ref, func(m *Manifest) error { return m.SetUnprotected("verify_state", state) })
		if err != nil {
			r.Problems = append(r.Problems, fmt.Errorf("record verify state: %w", err))
		}
	}
	return r, nil
}

func (v *Verifier) verifyIndex(ctx context.Context, r *VerifyReport, p string, f FileInfo, dec *ChunkDecoder) error {
	idx, err := OpenIndex(p)
	if err != nil {
		r.Problems = append(r.Problems, err)
		return nil
	}
	csum := idx.Checksum()
	if hex.EncodeToString(csum[:]) != f.Csum || idx.Size() != f.Size {
		r.Problems = append(r.Problems, fmt.Errorf("%s: checksum %x size %d, manifest says %s size %d: %w", p, csum, idx.Size(), f.Csum, f.Size, ErrCorrupt))
	}
	type job struct {
		d      Digest
		length uint64
	}
	// Distinct chunks not yet checked in this run, and the failures of
	// those that were.
	var jobs []job
	failed := map[Digest]bool{}
	v.mu.Lock()
	for i := range idx.Len() {
		d, start, end := idx.Chunk(i)
		if err, ok := v.seen[d]; ok {
			if err != nil && !failed[d] {
				failed[d] = true
				r.Problems = append(r.Problems, fmt.Errorf("%s: %w", p, err))
			}
			continue
		}
		v.seen[d] = nil // claimed; the result is filled in below
		jobs = append(jobs, job{d, end - start})
	}
	v.mu.Unlock()

	results := make([]error, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(v.opts.Workers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) || ctx.Err() != nil {
					return
				}
				results[i] = v.checkChunk(ctx, jobs[i].d, jobs[i].length, dec)
				v.Chunks.Add(1)
				v.Bytes.Add(int64(jobs[i].length))
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	v.mu.Lock()
	for i, j := range jobs {
		v.seen[j.d] = results[i]
		if results[i] != nil {
			r.Problems = append(r.Problems, fmt.Errorf("%s: %w", p, results[i]))
		}
	}
	v.mu.Unlock()
	r.Chunks += len(jobs)
	return nil
}

// checkChunk verifies chunk d and, when recording, renames it to a .bad
// name if it is corrupt.
func (v *Verifier) checkChunk(ctx context.Context, d Digest, length uint64, dec *ChunkDecoder) error {
	if v.s.remote {
		// On S3 the bucket's object is what is verified, as PBS does
		// (spec A.3); a corrupt one is moved aside by the backend.
		err := v.s.verifyChunk(ctx, d, length, dec)
		r, ok := v.s.backend.(interface {
			RenameBad(context.Context, Digest) (string, error)
		})
		if err == nil || !errors.Is(err, ErrCorrupt) || !v.opts.Record || !ok {
			return err
		}
		bad, rerr := r.RenameBad(ctx, d)
		if rerr != nil {
			return fmt.Errorf("%w (renaming it failed: %v)", err, rerr)
		}
		return fmt.Errorf("%w (renamed to %s)", err, bad)
	}
	path := v.s.chunks.Path(d)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("chunk %s: %w", d, ErrChunkMissing)
		}
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	err := v.s.verifyChunk(ctx, d, length, dec)
	if err == nil || !errors.Is(err, ErrCorrupt) || !v.opts.Record {
		return err
	}
	bad, rerr := v.s.chunks.renameBad(d, st.Ino)
	if rerr != nil {
		return fmt.Errorf("%w (renaming it failed: %v)", err, rerr)
	}
	if bad != "" {
		return fmt.Errorf("%w (renamed to %s)", err, bad)
	}
	return err
}

// renameBad renames the corrupt chunk file of d, if it is still the file
// with inode ino, to <digest>.<n>.bad with the first free n in 0..9 (the
// last one is overwritten), under the prefix directory's exclusive lock so
// no insert or sweep races it (§1.2). It returns the new name.
func (s *FileChunkStore) renameBad(d Digest, ino uint64) (string, error) {
	if s.PrefixLock != nil {
		unlock, err := s.PrefixLock(prefixOf(d), true)
		if err != nil {
			return "", err
		}
		defer unlock()
	}
	p := s.Path(d)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Ino != ino {
		return "", nil // replaced (re-uploaded) or gone meanwhile
	}
	var target string
	for n := range 10 {
		target = fmt.Sprintf("%s.%d.bad", p, n)
		if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err := os.Rename(p, target); err != nil {
		return "", err
	}
	return filepath.Base(target), syncDir(filepath.Dir(p))
}

func (s *Store) verifyBlobFile(p string, f FileInfo, key *crypto.Key) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	if uint64(len(b)) != f.Size || hex.EncodeToString(sum[:]) != f.Csum {
		return fmt.Errorf("%s: size %d sha256 %x, manifest says size %d %s: %w", p, len(b), sum, f.Size, f.Csum, ErrCorrupt)
	}
	if kind, kerr := BlobKindOf(b); kerr == nil && kind.Encrypted() && key == nil {
		_, err = VerifyBlobCRC(b)
	} else {
		_, err = s.codec.AppendDecodeWith(nil, b, key)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// verifyChunk loads chunk d without the cache and checks it as dec
// decodes it. An encrypted chunk without a key gets what can be checked
// without one: magic, CRC and, for an uncompressed one, the ciphertext
// length against the index.
func (s *Store) verifyChunk(ctx context.Context, d Digest, length uint64, dec *ChunkDecoder) error {
	get := s.chunks.Get
	if f, ok := s.backend.(interface {
		Fetch(context.Context, Digest) ([]byte, error)
	}); ok {
		get = f.Fetch // the object itself, not a cached copy
	}
	blob, err := get(ctx, d)
	if err != nil {
		return err
	}
	kind, err := VerifyBlobCRC(blob)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	if kind.Encrypted() != dec.encrypted {
		return fmt.Errorf("chunk %s: %s blob where the manifest says crypt mode %v: %w", d, kind, dec.encrypted, ErrCorrupt)
	}
	if dec.encrypted && dec.key == nil {
		if n := uint64(len(blob) - encryptedBlobHeaderSize); kind == BlobEncrypted && n != length {
			return fmt.Errorf("chunk %s: %d bytes of ciphertext, index says %d: %w", d, n, length, ErrCorrupt)
		}
		return nil
	}
	data, err := dec.Decode(nil, blob, d)
	if err != nil {
		return err
	}
	if uint64(len(data)) != length {
		return fmt.Errorf("chunk %s: %d bytes, index says %d: %w", d, len(data), length, ErrCorrupt)
	}
	return nil
}
