package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
	"github.com/spf13/pflag"
)

// s3Flags are the global flags of S3 datastores (pbs4.md §A): the bucket
// behind a PBS S3 datastore's cache directory, and how to reach it.
type s3Flags struct {
	endpoint, bucket, region, caFile, cacheDir string
	pathStyle, http                            bool
}

func (f *s3Flags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "S3 endpoint HOST[:PORT] of a PBS S3 datastore whose local cache directory --store names")
	fs.StringVar(&f.bucket, "s3-bucket", "", "bucket of the PBS S3 datastore whose local cache directory --store names (with --s3-endpoint; the key prefix is the datastore name, --store-name or datastore.cfg's)")
	fs.StringVar(&f.region, "s3-region", "", "S3 signing region (default $AWS_REGION, else us-east-1)")
	fs.BoolVar(&f.pathStyle, "s3-path-style", false, "bucket in the URL path (https://HOST/BUCKET/KEY) rather than the host name; s3:// URLs always use it")
	fs.StringVar(&f.caFile, "s3-ca-file", "", "PEM file of CA certificates to trust for the S3 endpoint, besides the system's")
	fs.BoolVar(&f.http, "s3-http", false, "talk plain HTTP to --s3-endpoint (local test servers and gateways)")
	fs.StringVar(&f.cacheDir, "s3-cache-dir", "", "where pbsfs keeps the metadata of a datastore opened from its bucket alone (s3://HOST/BUCKET/STORE; default $XDG_CACHE_HOME/pbsfs/s3/..., /var/cache/pbsfs/s3/... for root)")
}

// isS3 reports whether the datastore is in a bucket: an s3:// URL, or a
// cache directory with --s3-bucket.
func (e *env) isS3() bool { return s3.IsURL(e.storePath) || e.s3.bucket != "" }

// s3Config returns the bucket configuration of the datastore: from its
// URL, or from the flags and name for a PBS cache directory.
func (e *env) s3Config(name string) (s3.Config, error) {
	var cfg s3.Config
	if s3.IsURL(e.storePath) {
		if e.s3.bucket != "" || e.s3.endpoint != "" {
			return cfg, usagef("--s3-endpoint and --s3-bucket are for a PBS cache directory; %s names the bucket already", e.storePath)
		}
		var err error
		if cfg, err = s3.ParseURL(e.storePath); err != nil {
			return cfg, usageError{err}
		}
	} else {
		if e.s3.endpoint == "" {
			return cfg, usagef("--s3-bucket needs --s3-endpoint")
		}
		if name == "" {
			return cfg, usagef("the S3 key prefix is the PBS datastore name: give --store-name (datastore.cfg does not name %s)", e.storePath)
		}
		cfg = s3.Config{Endpoint: e.s3.endpoint, Bucket: e.s3.bucket, Store: name, PathStyle: e.s3.pathStyle, Insecure: e.s3.http}
		if err := cfg.Check(); err != nil {
			return cfg, usageError{err}
		}
	}
	if e.s3.region != "" {
		cfg.Region = e.s3.region
	}
	if e.s3.pathStyle {
		cfg.PathStyle = true
	}
	cfg.CAFile = e.s3.caFile
	return cfg, nil
}

// openS3 opens an S3 datastore: from the bucket alone (an s3:// URL), or
// a PBS cache directory with its bucket.
func (e *env) openS3(ctx context.Context, opts store.Options) (*store.Store, error) {
	if s3.IsURL(e.storePath) {
		cfg, err := e.s3Config("")
		if err != nil {
			return nil, err
		}
		s, _, err := s3.Open(ctx, cfg, e.s3.cacheDir, opts)
		return s, err
	}
	name := opts.Name
	if name == "" {
		// The name datastore.cfg gives the cache directory, as PBS
		// names its keys.
		s, err := store.Open(e.storePath, opts)
		if err != nil {
			return nil, err
		}
		if s.NameSource() == store.NameFromConfig {
			name = s.Name()
		}
		s.Close()
	}
	cfg, err := e.s3Config(name)
	if err != nil {
		return nil, err
	}
	opts.Name = cfg.Store
	s, _, err := s3.OpenCache(ctx, cfg, e.storePath, opts)
	if err != nil {
		return nil, fmt.Errorf("%s with bucket %s: %w", e.storePath, cfg.URL(), err)
	}
	return s, nil
}

// initS3 makes a datastore in a bucket: there is nothing to create but
// the cache directory, so it checks that the bucket answers and that no
// datastore of that name is in it yet.
func (e *env) initS3(ctx context.Context) error {
	if !s3.IsURL(e.storePath) {
		return usagef("a PBS S3 datastore is made by PBS; pbsfs init takes s3://HOST/BUCKET/STORE")
	}
	cfg, err := e.s3Config("")
	if err != nil {
		return err
	}
	c, err := s3.New(cfg)
	if err != nil {
		return err
	}
	if err := c.CheckBucket(ctx); err != nil {
		return err
	}
	found := errors.New("found")
	switch err := c.List(ctx, "", func(s3.ObjectInfo) error { return found }); {
	case errors.Is(err, found):
		return fmt.Errorf("%s: a datastore of that name is in the bucket already: %w", cfg.URL(), store.ErrExists)
	case err != nil:
		return err
	}
	s, _, err := s3.Open(ctx, cfg, e.s3.cacheDir, e.storeOptions())
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(e.stdout, "created datastore %s (metadata cache %s)\n", cfg.URL(), s.Root())
	return nil
}
