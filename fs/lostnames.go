package fs

import (
	"path"

	"github.com/pbsfs/pbsfs/store/pxar"
)

// Children of a plain archive's directory whose names went with damaged
// chunks are named from the snapshot's catalog, as restore names them:
// the listing shows each name the catalog has and the archive did not
// give, and looking one up gives EIO (the archive cannot find it). The
// listing ends with EIO only when the catalog names fewer entries than
// were lost, or there is no catalog (a split archive, or none).

// catalogEntry is the catalog lookup of one archive, found once.
type catalogEntry struct {
	names func(dir string) ([]string, error) // nil: no catalog
}

// lostNames returns the names the catalog gives directory dir of the
// archive of st that are not in listed.
func (st *archiveState) lostNames(dir *pxar.Entry, listed map[string]bool) []string {
	key := path.Join(st.ref.Dir(), st.file)
	st.m.mu.Lock()
	c, ok := st.m.catalogs[key]
	st.m.mu.Unlock()
	if !ok {
		if si, err := st.m.s.Snapshot(st.ref); err == nil {
			c.names = st.m.s.CatalogNames(st.m.ctx, si, st.file)
		}
		st.m.mu.Lock()
		st.m.catalogs[key] = c
		st.m.mu.Unlock()
	}
	if c.names == nil {
		return nil
	}
	names, err := c.names(dir.Path)
	if err != nil {
		st.errno(err, "catalog", dir) // logs it
		return nil
	}
	var lost []string
	for _, n := range names {
		if !listed[n] && n != "" && n != "." && n != ".." {
			lost = append(lost, n)
		}
	}
	return lost
}
