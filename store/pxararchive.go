package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pbsfs/pbsfs/store/catalog"
	"github.com/pbsfs/pbsfs/store/exclude"
	"github.com/pbsfs/pbsfs/store/pxar"
)

// PxarFiles returns the index files holding pxar archive name ("root.pxar"
// or "root") of a snapshot: meta is NAME.pxar.didx for a plain archive, or
// NAME.mpxar.didx with payload NAME.ppxar.didx for a split one (§1.4).
func PxarFiles(si SnapshotInfo, name string) (meta, payload string, err error) {
	base := strings.TrimSuffix(strings.TrimSuffix(name, ".didx"), ".pxar")
	base = strings.TrimSuffix(strings.TrimSuffix(base, ".mpxar"), ".ppxar")
	switch {
	case si.HasFile(base + ".pxar.didx"):
		return base + ".pxar.didx", "", nil
	case si.HasFile(base+".mpxar.didx") && si.HasFile(base+".ppxar.didx"):
		return base + ".mpxar.didx", base + ".ppxar.didx", nil
	}
	return "", "", fmt.Errorf("snapshot %s has no pxar archive %q: %w", si.Ref, name, ErrNotFound)
}

// OpenPxar opens pxar archive name of a snapshot for random access, plain
// or split. ctx bounds the chunk loads of later reads.
func (s *Store) OpenPxar(ctx context.Context, si SnapshotInfo, name string) (*pxar.Archive, error) {
	metaName, payloadName, err := PxarFiles(si, name)
	if err != nil {
		return nil, err
	}
	meta, err := s.OpenArchive(ctx, si.Ref, metaName)
	if err != nil {
		return nil, err
	}
	var payload io.ReaderAt
	if payloadName != "" {
		p, err := s.OpenArchive(ctx, si.Ref, payloadName)
		if err != nil {
			return nil, err
		}
		payload = p
	}
	a, err := pxar.Open(meta, meta.Size(), payload)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", si.Ref, metaName, err)
	}
	return a, nil
}

// PxarOptions configure AddPxar.
type PxarOptions struct {
	// Split writes NAME.mpxar.didx and NAME.ppxar.didx instead of
	// NAME.pxar.didx and a catalog entry.
	Split bool
	// AllFileSystems crosses mount points (the PBS client stops at them).
	AllFileSystems bool
	// Metadata turns on metadata change detection (implies Split): files
	// whose metadata equals their entry in the base snapshot's split
	// archive of the same name keep their payload without being read
	// (pxar.Previous). Without such a base every file is read.
	Metadata bool
	// OnError is told of each entry that could not be read; the entry is
	// skipped and the backup goes on. Nil skips silently.
	OnError func(path string, err error)
	// OnWarning is told of a file that changed while it was read but is
	// archived all the same, and of why no previous archive is used.
	OnWarning func(path string, err error)
	// Stats, if not nil, receives the counts of files read and reused.
	Stats *pxar.ReuseStats
	// MaxPadding is pxar.Previous.MaxPadding (0: the PBS client's 10 %).
	MaxPadding float64
	// Exclude are the --exclude patterns (pxar.CreateOptions.Exclude);
	// a split archive records them in its prelude.
	Exclude exclude.List
}

// previousPxar opens the base snapshot's split archive name for metadata
// change detection, writing chunks injected from it to payloadW. It
// returns nil and the reason when there is none to use.
func (b *Backup) previousPxar(ctx context.Context, name string, payloadW *StreamWriter) (*pxar.Previous, error) {
	if b.base == nil {
		return nil, errors.New("no previous snapshot to compare with (none finished, its verification failed, or another key)")
	}
	metaName, payloadName, err := PxarFiles(*b.base, name)
	if err != nil {
		return nil, err
	}
	if payloadName == "" {
		return nil, fmt.Errorf("previous snapshot %s has a plain archive %s, not a split one", b.base.Ref, metaName)
	}
	m, err := b.s.LoadManifest(b.base.Ref)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{metaName, payloadName} {
		if fi, ok := m.File(f); !ok || fi.CryptMode != b.mode {
			return nil, fmt.Errorf("previous snapshot %s: %s is not in the manifest with crypt mode %s", b.base.Ref, f, b.mode)
		}
	}
	idx, err := b.s.OpenIndex(b.base.Ref, metaName)
	if err != nil {
		return nil, err
	}
	meta := b.s.NewArchiveWith(ctx, idx, b.dec)
	a, err := pxar.Open(meta, meta.Size(), nil)
	if err != nil {
		return nil, fmt.Errorf("previous snapshot %s/%s: %w", b.base.Ref, metaName, err)
	}
	pidx, err := b.s.OpenIndex(b.base.Ref, payloadName)
	if err != nil {
		return nil, err
	}
	dx, ok := pidx.(*DynamicIndex)
	if !ok {
		return nil, fmt.Errorf("previous snapshot %s/%s is not a dynamic index: %w", b.base.Ref, payloadName, ErrCorrupt)
	}
	chunks := make([]pxar.PayloadChunk, dx.Len())
	for i := range chunks {
		d, start, end := dx.Chunk(i)
		chunks[i] = pxar.PayloadChunk{Start: start, End: end, Digest: d}
	}
	prev := &pxar.Previous{Archive: a, Chunks: chunks, Inject: payloadW.Inject, Check: payloadW.Check}
	if !b.s.Remote() {
		// The unchanged files the padding rule encodes afresh are read
		// from the previous payload stream, run by run in order (a
		// stream reader, with read-ahead), where its chunks are local
		// files: from a bucket, the source's files are nearer.
		prev.Payload = b.s.NewArchiveWith(ctx, dx, b.dec).NewReader()
	}
	return prev, nil
}

// AddPxar archives the directory tree at dir as pxar archive name
// ("root.pxar"), chunked with the 4 MiB average (§8). A plain archive is
// also recorded in the snapshot's catalog, written by Finish. It returns
// the number of entries skipped because they could not be read.
func (b *Backup) AddPxar(ctx context.Context, name, dir string, opts PxarOptions) (skipped int, err error) {
	base := strings.TrimSuffix(name, ".pxar")
	if base == name || base == "" {
		return 0, fmt.Errorf("pxar archive name %q: want NAME.pxar: %w", name, ErrInvalidName)
	}
	var metaW, payloadW *StreamWriter
	if opts.Metadata {
		opts.Split = true
	}
	if opts.Split {
		if metaW, err = b.CreateStream(ctx, base+".mpxar", DefaultAvgChunkSize); err != nil {
			return 0, err
		}
		if payloadW, err = b.CreateStream(ctx, base+".ppxar", DefaultAvgChunkSize); err != nil {
			metaW.Abort()
			return 0, err
		}
	} else if metaW, err = b.CreateStream(ctx, name, DefaultAvgChunkSize); err != nil {
		return 0, err
	}
	abort := func() {
		metaW.Abort()
		if payloadW != nil {
			payloadW.Abort()
		}
	}
	copts := pxar.CreateOptions{OnError: func(path string, err error) error {
		skipped++
		if opts.OnError != nil {
			opts.OnError(path, err)
		}
		return nil
	}, Warn: opts.OnWarning, Stats: opts.Stats, Exclude: opts.Exclude}
	if opts.Split && len(opts.Exclude) > 0 {
		prelude, err := json.Marshal(map[string]string{"exclude-patterns": string(opts.Exclude.CLIFile())})
		if err != nil {
			abort()
			return 0, err
		}
		copts.Prelude = prelude
	}
	if opts.Metadata {
		prev, err := b.previousPxar(ctx, name, payloadW)
		switch {
		case prev != nil:
			prev.MaxPadding = opts.MaxPadding
			copts.Previous = prev
		case opts.OnWarning != nil:
			opts.OnWarning(name, fmt.Errorf("every file is read: %w", err))
		}
	}
	if !opts.Split {
		cw, err := b.catalogWriter(ctx)
		if err != nil {
			abort()
			return 0, err
		}
		if err := cw.StartDirectory(name + ".didx"); err != nil {
			abort()
			return 0, err
		}
		copts.Catalog = cw
	}
	var w *pxar.Writer
	if payloadW != nil {
		w = pxar.NewWriter(metaW, payloadW)
	} else {
		w = pxar.NewWriter(metaW, nil)
	}
	src := &pxar.DirSource{Root: dir, OneFileSystem: !opts.AllFileSystems}
	err = pxar.Create(ctx, src, w, copts)
	src.Close()
	if err == nil && copts.Catalog != nil {
		err = b.catalog.EndDirectory()
	}
	if err != nil {
		abort()
		return skipped, fmt.Errorf("pxar %s of %s: %w", name, dir, err)
	}
	// A split archive's two streams wait for the disk once.
	streams := []*StreamWriter{metaW}
	if payloadW != nil {
		streams = append(streams, payloadW)
	}
	return skipped, closeStreams(streams...)
}

// catalogWriter returns the snapshot's catalog, started on first use.
func (b *Backup) catalogWriter(ctx context.Context) (*catalog.Writer, error) {
	if b.catalog != nil {
		return b.catalog, nil
	}
	sw, err := b.CreateStream(ctx, strings.TrimSuffix(CatalogName, ".didx"), CatalogAvgChunkSize)
	if err != nil {
		return nil, err
	}
	cw, err := catalog.NewWriter(sw)
	if err != nil {
		sw.Abort()
		return nil, err
	}
	b.catalog, b.catalogStream = cw, sw
	return cw, nil
}

// finishCatalog completes the catalog stream, if one was started.
func (b *Backup) finishCatalog() error {
	if b.catalog == nil {
		return nil
	}
	if err := b.catalog.Finish(); err != nil {
		b.catalogStream.Abort()
		return fmt.Errorf("catalog: %w", err)
	}
	_, err := b.catalogStream.Close()
	return err
}

// LinkSource says how HardlinkCounts found the hardlinks of an archive.
type LinkSource string

// Sources of hardlink counts.
const (
	// LinksFromCatalog: the snapshot's catalog named every hardlink of a
	// plain archive; only the catalog and the hardlinks' own directory
	// lookups were read, none of the archive's file data.
	LinksFromCatalog LinkSource = "catalog"
	// LinksFromMetadata: a split archive's metadata stream (which holds
	// no file data) was scanned.
	LinksFromMetadata LinkSource = "metadata stream"
	// LinksFromScan: a plain archive without a usable catalog was scanned
	// whole, file data included.
	LinksFromScan LinkSource = "archive scan"
)

// HardlinkCounts counts, for pxar archive a (whose metadata stream is the
// index file metaName of snapshot ref, read through meta), the hardlinks
// to each file, keyed by the offset of the file's FILENAME header: a
// file's link count is one more. pxar stores no link counts; this finds
// them as cheaply as the snapshot allows (see LinkSource).
func (s *Store) HardlinkCounts(ctx context.Context, ref SnapshotRef, metaName string, a *pxar.Archive, meta *Archive) (map[int64]uint32, LinkSource, error) {
	if !a.Split() {
		links, err := s.catalogLinks(ctx, ref, metaName, a)
		if err == nil {
			return links, LinksFromCatalog, nil
		}
		s.log.Debug("hardlinks: no usable catalog, scanning the archive", "snapshot", ref.String(), "file", metaName, "err", err)
	}
	src := LinksFromMetadata
	if !a.Split() {
		src = LinksFromScan
	}
	links := make(map[int64]uint32)
	d := pxar.NewDecoder(meta, meta.Size(), nil)
	for ctx.Err() == nil {
		x, err := d.Next()
		if errors.Is(err, io.EOF) {
			return links, src, nil
		}
		if err != nil {
			return links, src, err
		}
		if x.Kind == pxar.KindHardlink {
			links[x.HardlinkOffset]++
		}
	}
	return links, src, ctx.Err()
}

// catalogLinks finds the hardlinks of plain archive a through the
// snapshot's catalog: the catalog lists every hardlink by path, and a
// lookup of each path in the archive gives the file it points to.
func (s *Store) catalogLinks(ctx context.Context, ref SnapshotRef, metaName string, a *pxar.Archive) (map[int64]uint32, error) {
	ca, err := s.OpenArchive(ctx, ref, CatalogName)
	if err != nil {
		return nil, err
	}
	cr, err := catalog.NewReader(ca, ca.Size())
	if err != nil {
		return nil, err
	}
	dir, err := cr.Lookup("/" + metaName)
	if err != nil {
		return nil, err
	}
	var paths []string
	err = cr.Walk(dir, func(p string, e catalog.Entry) error {
		if e.Type == catalog.TypeHardlink {
			paths = append(paths, p)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	links := make(map[int64]uint32)
	for _, p := range paths {
		e, err := a.Lookup(p)
		if err != nil {
			return nil, fmt.Errorf("catalog hardlink %q: %w", p, err)
		}
		if e.Kind != pxar.KindHardlink {
			return nil, fmt.Errorf("catalog hardlink %q is a %v in the archive: %w", p, e.Kind, ErrCorrupt)
		}
		links[e.HardlinkOffset]++
	}
	return links, nil
}
