package s3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pbsfs/pbsfs/store"
)

// Open opens the datastore of the bucket cfg names alone: it brings the
// cache directory dir (DefaultCacheDir if empty) up to date with the
// bucket's metadata (SyncMetadata) and opens it with the bucket as its
// chunk store. The store's name, for lock files, is the datastore name
// unless opts names another.
func Open(ctx context.Context, cfg Config, dir string, opts store.Options) (*store.Store, *Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if dir == "" {
		if dir, err = DefaultCacheDir(cfg); err != nil {
			return nil, nil, err
		}
	}
	if err := c.CheckBucket(ctx); err != nil {
		return nil, nil, err
	}
	if _, err := SyncMetadata(ctx, c, dir); err != nil {
		return nil, nil, err
	}
	s, err := store.Open(dir, withBackend(c, opts))
	if err != nil {
		return nil, nil, err
	}
	return s, c, nil
}

// OpenCache opens a PBS S3 datastore by its local cache directory root,
// with the bucket cfg names behind it (cfg.Store is the datastore name,
// the keys' prefix). Metadata is read from root as PBS keeps it there;
// chunks whose file is missing or empty come from the bucket.
func OpenCache(ctx context.Context, cfg Config, root string, opts store.Options) (*store.Store, *Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := c.CheckBucket(ctx); err != nil {
		return nil, nil, err
	}
	s, err := store.Open(root, withBackend(c, opts))
	if err != nil {
		return nil, nil, err
	}
	return s, c, nil
}

func withBackend(c *Client, opts store.Options) store.Options {
	if opts.Name == "" {
		opts.Name = c.cfg.Store
	}
	opts.Backend = func(local *store.FileChunkStore) (store.ChunkStore, error) {
		return NewChunks(c, local), nil
	}
	opts.Mirror = mirror{c}
	if opts.ReadAheadSlots == 0 {
		opts.ReadAheadSlots = c.cfg.Parallel
	}
	if opts.ReadAheadBytes == 0 {
		// One chunk object per request slot: a sequential reader keeps
		// them all busy, and one slow GET does not empty the pipeline
		// (the reader waits on it while the others land).
		opts.ReadAheadBytes = int64(c.cfg.Parallel) * store.FixedChunkSize
	}
	return opts
}

// DefaultCacheDir returns the cache directory pbsfs keeps for the
// datastore cfg names: below $PBSFS_S3_CACHE_DIR, else
// $XDG_CACHE_HOME/pbsfs/s3 or ~/.cache/pbsfs/s3, or /var/cache/pbsfs/s3
// for root, then <endpoint>/<bucket>/<store>.
func DefaultCacheDir(cfg Config) (string, error) {
	base := os.Getenv("PBSFS_S3_CACHE_DIR")
	if base == "" {
		if os.Geteuid() == 0 {
			base = "/var/cache/pbsfs/s3"
		} else {
			d, err := os.UserCacheDir()
			if err != nil {
				return "", fmt.Errorf("s3 cache directory: %w (give --s3-cache-dir)", err)
			}
			base = filepath.Join(d, "pbsfs", "s3")
		}
	}
	host := strings.NewReplacer(":", "_", "/", "_").Replace(cfg.Endpoint)
	return filepath.Join(base, host, cfg.Bucket, cfg.Store), nil
}

// InUse reads the `<store>/.in-use` marker PBS writes when it makes a
// datastore in the bucket (pbs4.md §A.4) and returns the host it names,
// "" when there is none.
func (c *Client) InUse(ctx context.Context) (string, error) {
	b, _, err := c.Get(ctx, ".in-use", 1<<20)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var v struct {
		Hostname string `json:"hostname"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Hostname == "" {
		return "an unknown host (unreadable .in-use)", nil
	}
	return v.Hostname, nil
}

// mirror keeps a datastore's metadata as the bucket's `.cnt/` objects
// (store.Mirror).
type mirror struct{ c *Client }

func (m mirror) PutFile(ctx context.Context, rel string, data []byte) error {
	_, err := m.c.Put(ctx, ".cnt/"+rel, data, false)
	return err
}

func (m mirror) RemoveFile(ctx context.Context, rel string) error {
	return m.c.Remove(ctx, []string{".cnt/" + rel})
}

func (m mirror) RemoveDir(ctx context.Context, rel string) error {
	_, err := m.c.RemovePrefix(ctx, ".cnt/"+rel+"/")
	return err
}
