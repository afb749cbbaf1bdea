package store

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/pbsfs/pbsfs/store/catalog"
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
	// OnError is told of each entry that could not be read; the entry is
	// skipped and the backup goes on. Nil skips silently.
	OnError func(path string, err error)
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
	}}
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
	if _, err := metaW.Close(); err != nil {
		abort()
		return skipped, err
	}
	if payloadW != nil {
		if _, err := payloadW.Close(); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
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
