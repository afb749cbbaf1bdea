// Package s3 opens PBS 4 datastores kept in S3 object storage
// (shared spec pbs4.md §A): a chunk store behind store.ChunkStore that
// reads and writes `<store>/.chunks/<4hex>/<64hex>` objects, the
// metadata mirror `<store>/.cnt/<path>`, and the `<store>/.in-use` marker.
//
// Two ways to open such a datastore share one design: the metadata is a
// directory in the normal datastore layout, and chunks are fetched from
// the bucket whenever the directory has no content for them.
//
//   - A PBS S3 datastore's local cache directory (OpenCache): PBS keeps
//     all metadata there, and in `.chunks` a least-recently-used set of
//     chunks; an evicted chunk is a 0-byte file, which means "fetch from
//     the bucket", never "corrupt".
//   - The bucket alone (Open, an s3:// or s3+http:// URL): pbsfs keeps its
//     own cache directory, filled from the bucket's `.cnt/` objects
//     (SyncMetadata) on open; its `.chunks` holds only the 0-byte markers
//     of chunks this machine uploaded or the collector found referenced.
//
// Chunk contents are never stored in pbsfs's cache directory: the read
// engine's decoded-chunk cache (bounded by --cache-size) holds them, so
// the directory's size is that of the metadata.
package s3

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config names a bucket, the datastore in it and how to reach it.
type Config struct {
	// Endpoint is HOST or HOST:PORT of the S3 service.
	Endpoint string
	// Insecure talks plain HTTP instead of HTTPS.
	Insecure bool
	// Bucket is the bucket name.
	Bucket string
	// Store is the PBS datastore name: every key starts with "<Store>/".
	Store string
	// Region is the signing region; "us-east-1" when empty (AWS_REGION
	// from the environment, if set, as the usual clients do).
	Region string
	// PathStyle puts the bucket into the path (https://host/bucket/key)
	// instead of the host name (https://bucket.host/key).
	PathStyle bool
	// CAFile is a PEM file of certificates trusted besides the system's.
	CAFile string
	// AccessKey, SecretKey and SessionToken are the credentials; when
	// AccessKey is empty they come from AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or the shared credentials
	// file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials, profile
	// AWS_PROFILE).
	AccessKey, SecretKey, SessionToken string
	// Parallel bounds the requests in flight (DefaultParallel if 0).
	Parallel int
	// Timeout bounds one request, retries included (DefaultTimeout if 0).
	Timeout time.Duration
	// MaxRetries is how often a request is tried on transport errors,
	// 5xx answers and throttling (SlowDown), with exponential backoff
	// (DefaultMaxRetries if 0).
	MaxRetries int
	// Transport, if set, carries the requests (tests).
	Transport http.RoundTripper
}

// Defaults of Config.
const (
	DefaultParallel   = 16
	DefaultTimeout    = 5 * time.Minute
	DefaultMaxRetries = 5
)

// bucketRE is PBS's rule for bucket names (spec A.1), which is also S3's
// for new buckets.
var bucketRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9\-.]*[a-z0-9])?$`)

// storeRE is PBS's safe id, the rule of datastore names.
var storeRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._\-]*$`)

// IsURL reports whether s names a datastore in a bucket (s3:// or
// s3+http://) rather than a directory.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "s3://") || strings.HasPrefix(s, "s3+http://")
}

// ParseURL reads s3://HOST[:PORT]/BUCKET/STORE (HTTPS) or
// s3+http://HOST[:PORT]/BUCKET/STORE (plain HTTP). Query parameters
// region=R and path-style=false set those fields; path style is the
// default, since the bucket is in the path of the URL.
func ParseURL(s string) (Config, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Config{}, fmt.Errorf("s3 url: %w", err)
	}
	var cfg Config
	switch u.Scheme {
	case "s3":
	case "s3+http":
		cfg.Insecure = true
	default:
		return Config{}, fmt.Errorf("s3 url %q: scheme must be s3 or s3+http", s)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("s3 url %q: credentials belong in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not in the URL", redact(u))
	}
	if u.Host == "" {
		return Config{}, fmt.Errorf("s3 url %q: no host", s)
	}
	cfg.Endpoint = u.Host
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Config{}, fmt.Errorf("s3 url %q: want s3://HOST[:PORT]/BUCKET/STORE", s)
	}
	cfg.Bucket, cfg.Store = parts[0], parts[1]
	cfg.PathStyle = true
	q := u.Query()
	if r := q.Get("region"); r != "" {
		cfg.Region = r
	}
	if ps := q.Get("path-style"); ps == "false" || ps == "0" {
		cfg.PathStyle = false
	}
	return cfg, cfg.Check()
}

func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// Check reports a configuration that cannot work.
func (c Config) Check() error {
	if c.Endpoint == "" {
		return fmt.Errorf("s3: no endpoint")
	}
	if len(c.Bucket) < 3 || len(c.Bucket) > 63 || !bucketRE.MatchString(c.Bucket) {
		return fmt.Errorf("s3: bucket name %q: want 3 to 63 of a-z, 0-9, '-' and '.'", c.Bucket)
	}
	if !storeRE.MatchString(c.Store) || len(c.Store) > 255 {
		return fmt.Errorf("s3: datastore name %q is not a PBS datastore name", c.Store)
	}
	return nil
}

// URL returns the configuration as an s3:// or s3+http:// URL (no
// credentials).
func (c Config) URL() string {
	scheme := "s3"
	if c.Insecure {
		scheme = "s3+http"
	}
	return fmt.Sprintf("%s://%s/%s/%s", scheme, c.Endpoint, c.Bucket, c.Store)
}

func (c Config) region() string {
	if c.Region != "" {
		return c.Region
	}
	if r := os.Getenv("AWS_REGION"); r != "" {
		return r
	}
	if r := os.Getenv("AWS_DEFAULT_REGION"); r != "" {
		return r
	}
	return "us-east-1"
}
