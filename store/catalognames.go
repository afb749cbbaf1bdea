package store

import (
	"context"
	"sync"

	"github.com/pbsfs/pbsfs/store/catalog"
)

// CatalogNames returns a lookup of the names each directory of pxar
// archive name of snapshot si holds according to the snapshot's catalog:
// dir is an archive path such as "/" or "/etc". It is nil for a split
// archive (the catalog covers plain ones) or a snapshot without a
// catalog. Restore and the mount name with it the entries whose names
// were lost with damaged chunks. The catalog is opened on first use; the
// lookup is safe for concurrent use.
func (s *Store) CatalogNames(ctx context.Context, si SnapshotInfo, name string) func(dir string) ([]string, error) {
	meta, payload, err := PxarFiles(si, name)
	if err != nil || payload != "" || !si.HasFile(CatalogName) {
		return nil
	}
	var (
		mu sync.Mutex
		r  *catalog.Reader
	)
	return func(dir string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if r == nil {
			a, err := s.OpenArchive(ctx, si.Ref, CatalogName)
			if err != nil {
				return nil, err
			}
			if r, err = catalog.NewReader(a, a.Size()); err != nil {
				return nil, err
			}
		}
		d, err := r.Lookup("/" + meta + dir)
		if err != nil {
			return nil, err
		}
		list, err := r.ReadDir(d)
		if err != nil {
			return nil, err
		}
		names := make([]string, len(list))
		for i, x := range list {
			names[i] = x.Name
		}
		return names, nil
	}
}
