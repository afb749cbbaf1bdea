package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotFound reports an object that is not in the bucket; it matches
// fs.ErrNotExist too.
var ErrNotFound = fmt.Errorf("s3: no such object: %w", fs.ErrNotExist)

// Client reads and writes the objects of one datastore in a bucket: the
// keys it takes are relative to "<store>/". It bounds the requests in
// flight, gives each a timeout, and retries transport errors, 5xx
// answers and throttling with exponential backoff (the library's retry
// loop). It is safe for concurrent use.
type Client struct {
	mc      *minio.Client
	cfg     Config
	prefix  string // "<store>/"
	sem     chan struct{}
	timeout time.Duration
	counts  *Counts
}

// Counts counts the HTTP requests a Client sent, retries included, by
// kind, and the payload bytes it received.
type Counts struct {
	// List counts ListObjectsV2 pages, Get the other GETs.
	Get, List, Put, Post, Delete, Head, Other atomic.Int64
	// Throttled counts answers 503 and 429 (each was retried, unless the
	// retries ran out).
	Throttled atomic.Int64
	BytesIn   atomic.Int64
}

// Tally is a copy of Counts at one moment.
type Tally struct {
	Get, List, Put, Post, Delete, Head, Other, Throttled, BytesIn int64
}

// Tally returns the counts now.
func (c *Counts) Tally() Tally {
	return Tally{c.Get.Load(), c.List.Load(), c.Put.Load(), c.Post.Load(), c.Delete.Load(), c.Head.Load(),
		c.Other.Load(), c.Throttled.Load(), c.BytesIn.Load()}
}

// Sub returns the requests counted since u.
func (t Tally) Sub(u Tally) Tally {
	return Tally{t.Get - u.Get, t.List - u.List, t.Put - u.Put, t.Post - u.Post, t.Delete - u.Delete,
		t.Head - u.Head, t.Other - u.Other, t.Throttled - u.Throttled, t.BytesIn - u.BytesIn}
}

// Requests is the total of requests sent.
func (t Tally) Requests() int64 {
	return t.Get + t.List + t.Put + t.Post + t.Delete + t.Head + t.Other
}

func (t Tally) String() string {
	return fmt.Sprintf("%d requests (GET %d, LIST %d, PUT %d, POST %d, DELETE %d, HEAD %d), %d throttled",
		t.Requests(), t.Get, t.List, t.Put, t.Post, t.Delete, t.Head, t.Throttled)
}

// Requests is the total of requests sent.
func (c *Counts) Requests() int64 { return c.Tally().Requests() }

func (c *Counts) String() string { return c.Tally().String() }

// countingTransport counts requests on their way out.
type countingTransport struct {
	rt http.RoundTripper
	c  *Counts
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.Method {
	case http.MethodGet:
		if r.URL.Query().Has("list-type") {
			t.c.List.Add(1)
		} else {
			t.c.Get.Add(1)
		}
	case http.MethodPut:
		t.c.Put.Add(1)
	case http.MethodPost:
		t.c.Post.Add(1)
	case http.MethodDelete:
		t.c.Delete.Add(1)
	case http.MethodHead:
		t.c.Head.Add(1)
	default:
		t.c.Other.Add(1)
	}
	resp, err := t.rt.RoundTrip(r)
	if err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) {
		t.c.Throttled.Add(1)
	}
	return resp, err
}

// New returns a client of the datastore cfg names. It sends no request.
func New(cfg Config) (*Client, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	rt := cfg.Transport
	if rt == nil {
		tr, err := minio.DefaultTransport(!cfg.Insecure)
		if err != nil {
			return nil, fmt.Errorf("s3: %w", err)
		}
		tr.MaxIdleConnsPerHost = 2 * cfg.Parallel
		tr.ResponseHeaderTimeout = 2 * time.Minute
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("s3: CA file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("s3: CA file %s: no PEM certificate in it", cfg.CAFile)
			}
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		rt = tr
	}
	counts := &Counts{}
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle || !namedHost(cfg.Endpoint) {
		// An IP address or localhost cannot carry the bucket in its name.
		lookup = minio.BucketLookupPath
	}
	mc, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentialsOf(cfg),
		Secure:       !cfg.Insecure,
		Transport:    countingTransport{rt, counts},
		Region:       cfg.region(),
		BucketLookup: lookup,
		MaxRetries:   cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	return &Client{mc: mc, cfg: cfg, prefix: cfg.Store + "/", sem: make(chan struct{}, cfg.Parallel),
		timeout: cfg.Timeout, counts: counts}, nil
}

// namedHost reports whether the endpoint's host is a DNS name that a
// bucket name can be put in front of.
func namedHost(endpoint string) bool {
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return net.ParseIP(host) == nil && host != "localhost"
}

// credentialsOf returns the static credentials of cfg, or the chain of
// the environment and the shared credentials file.
func credentialsOf(cfg Config) *credentials.Credentials {
	if cfg.AccessKey != "" {
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{}, // AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, AWS_PROFILE
	})
}

// Config returns the client's configuration.
func (c *Client) Config() Config { return c.cfg }

// Counts returns the client's request counters.
func (c *Client) Counts() *Counts { return c.counts }

// Key returns the full object key of rel ("<store>/<rel>").
func (c *Client) Key(rel string) string { return c.prefix + rel }

// acquire takes a request slot and a timeout for one call.
func (c *Client) acquire(ctx context.Context) (context.Context, func(), error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return ctx, func() { cancel(); <-c.sem }, nil
}

// translate turns the library's errors into wrapped ones: a missing
// object or bucket matches ErrNotFound.
func translate(what string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey":
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case "NoSuchBucket":
		return fmt.Errorf("%s: bucket %s: %w", what, resp.BucketName, ErrNotFound)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ObjectInfo describes one object; Rel is its key relative to "<store>/".
type ObjectInfo struct {
	Rel          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// Get returns the object rel, refusing one larger than limit bytes
// (ErrTooLarge) before reading it all.
func (c *Client) Get(ctx context.Context, rel string, limit int64) ([]byte, ObjectInfo, error) {
	var b []byte
	info, err := c.GetInto(ctx, rel, limit, func(n int64) ([][]byte, error) {
		b = make([]byte, n)
		return [][]byte{b}, nil
	})
	if err != nil {
		return nil, info, err
	}
	return b, info, nil
}

// GetInto reads the object rel into the buffers bufs returns for its
// size, whose lengths must add up to it, refusing an object larger than
// limit bytes (ErrTooLarge) before reading it, and a body longer or
// shorter than its announced size. An error of bufs is returned as is.
func (c *Client) GetInto(ctx context.Context, rel string, limit int64, bufs func(n int64) ([][]byte, error)) (ObjectInfo, error) {
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer done()
	// The response body itself (Core), not minio.Object: an Object
	// serves each Read through a goroutine of its own, two channel
	// handoffs per read system call and a wait for that goroutine at
	// Close, which on a busy machine held each chunk for milliseconds.
	body, st, _, err := minio.Core{Client: c.mc}.GetObject(ctx, c.cfg.Bucket, c.Key(rel), minio.GetObjectOptions{})
	if err != nil {
		return ObjectInfo{}, translate("get "+c.Key(rel), err)
	}
	defer body.Close()
	info := ObjectInfo{Rel: rel, Size: st.Size, ETag: st.ETag, LastModified: st.LastModified}
	if st.Size < 0 {
		return info, fmt.Errorf("get %s: no Content-Length: %w", c.Key(rel), ErrSizeMismatch)
	}
	if st.Size > limit {
		return info, fmt.Errorf("get %s: object of %d bytes: %w", c.Key(rel), st.Size, ErrTooLarge)
	}
	bs, err := bufs(st.Size)
	if err != nil {
		return info, err
	}
	var total int64
	for _, b := range bs {
		total += int64(len(b))
	}
	if total != st.Size {
		return info, fmt.Errorf("get %s: buffers of %d bytes for an object of %d", c.Key(rel), total, st.Size)
	}
	for _, b := range bs {
		n, err := io.ReadFull(body, b)
		c.counts.BytesIn.Add(int64(n))
		if err != nil {
			return info, translate("get "+c.Key(rel), err)
		}
	}
	// A longer body than announced is as wrong as a shorter one. The
	// read also takes the body to its end, so that the connection is
	// used again.
	var one [1]byte
	if k, _ := io.ReadFull(body, one[:]); k > 0 {
		return info, fmt.Errorf("get %s: longer than its %d bytes: %w", c.Key(rel), st.Size, ErrSizeMismatch)
	}
	return info, nil
}

// ErrTooLarge reports an object above the size the caller accepts.
var ErrTooLarge = errors.New("s3: object too large")

// ErrSizeMismatch reports a body whose length is not the announced one.
var ErrSizeMismatch = errors.New("s3: object size differs from its listing")

// GetRange returns n bytes of object rel from offset off.
func (c *Client) GetRange(ctx context.Context, rel string, off, n int64) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, err
	}
	body, _, _, err := minio.Core{Client: c.mc}.GetObject(ctx, c.cfg.Bucket, c.Key(rel), opts)
	if err != nil {
		return nil, translate("get "+c.Key(rel), err)
	}
	defer body.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(body, b)
	c.counts.BytesIn.Add(int64(k))
	if err != nil {
		return nil, translate(fmt.Sprintf("get %s [%d,+%d)", c.Key(rel), off, n), err)
	}
	return b, nil
}

// Put stores data as object rel. With noReplace the request carries
// If-None-Match: * and an object already there is left alone: existed
// reports that (412 Precondition Failed). A 409 Conflict (a concurrent
// conditional put) is retried, as PBS does.
func (c *Client) Put(ctx context.Context, rel string, data []byte, noReplace bool) (existed bool, err error) {
	for try := 0; ; try++ {
		existed, err = c.put(ctx, rel, data, noReplace)
		if err == nil || try == 2 || minio.ToErrorResponse(errors.Unwrap(err)).StatusCode != http.StatusConflict {
			return existed, err
		}
		select {
		case <-time.After(time.Duration(try+1) * time.Second):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (c *Client) put(ctx context.Context, rel string, data []byte, noReplace bool) (bool, error) {
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", SendContentMd5: true, DisableMultipart: true}
	if noReplace {
		opts.SetMatchETagExcept("*")
	}
	_, err = c.mc.PutObject(ctx, c.cfg.Bucket, c.Key(rel), bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		if noReplace && minio.ToErrorResponse(err).StatusCode == http.StatusPreconditionFailed {
			return true, nil
		}
		return false, fmt.Errorf("put %s: %w", c.Key(rel), err)
	}
	return false, nil
}

// Copy copies object src to dst (CopyObject) as PBS copies a chunk it
// moves aside: the metadata replaced, Content-Type
// application/octet-stream.
func (c *Client) Copy(ctx context.Context, src, dst string) error {
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = c.mc.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: c.cfg.Bucket, Object: c.Key(dst), ReplaceMetadata: true, ContentType: "application/octet-stream"},
		minio.CopySrcOptions{Bucket: c.cfg.Bucket, Object: c.Key(src)})
	return translate(fmt.Sprintf("copy %s to %s", c.Key(src), c.Key(dst)), err)
}

// Stat returns the size and ETag of object rel.
func (c *Client) Stat(ctx context.Context, rel string) (ObjectInfo, error) {
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer done()
	st, err := c.mc.StatObject(ctx, c.cfg.Bucket, c.Key(rel), minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, translate("stat "+c.Key(rel), err)
	}
	return ObjectInfo{Rel: rel, Size: st.Size, ETag: st.ETag, LastModified: st.LastModified}, nil
}

// List calls fn for every object whose key starts with "<store>/<rel>",
// in key order (ListObjectsV2, 1000 keys a page). rel must be empty or
// end in "/": a prefix without one would also match siblings whose names
// begin alike (vm/100 and vm/1000, spec A.7).
func (c *Client) List(ctx context.Context, rel string, fn func(ObjectInfo) error) error {
	if rel != "" && !strings.HasSuffix(rel, "/") {
		return fmt.Errorf("s3 list %q: prefix must end in '/'", rel)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range c.mc.ListObjects(ctx, c.cfg.Bucket, minio.ListObjectsOptions{Prefix: c.Key(rel), Recursive: true}) {
		if o.Err != nil {
			return translate("list "+c.Key(rel), o.Err)
		}
		if !strings.HasPrefix(o.Key, c.prefix) {
			continue
		}
		if err := fn(ObjectInfo{Rel: o.Key[len(c.prefix):], Size: o.Size, ETag: o.ETag, LastModified: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Remove deletes the objects rels with DeleteObjects requests (up to
// 1000 keys each). Any key the server could not delete fails the call;
// keys already gone count as deleted.
func (c *Client) Remove(ctx context.Context, rels []string) error {
	if len(rels) == 0 {
		return nil
	}
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer done()
	ch := make(chan minio.ObjectInfo, len(rels))
	for _, r := range rels {
		ch <- minio.ObjectInfo{Key: c.Key(r)}
	}
	close(ch)
	var first error
	n := 0
	for e := range c.mc.RemoveObjects(ctx, c.cfg.Bucket, ch, minio.RemoveObjectsOptions{}) {
		if minio.ToErrorResponse(e.Err).Code == "NoSuchKey" {
			continue
		}
		n++
		if first == nil {
			first = fmt.Errorf("delete %s: %w", e.ObjectName, e.Err)
		}
	}
	if first != nil {
		return fmt.Errorf("s3: %d of %d deletes failed, first: %w", n, len(rels), first)
	}
	return ctx.Err()
}

// RemovePrefix deletes every object below "<store>/<rel>" (rel ends in
// '/'), listing first and deleting in batches.
func (c *Client) RemovePrefix(ctx context.Context, rel string) (int, error) {
	var keys []string
	err := c.List(ctx, rel, func(o ObjectInfo) error {
		keys = append(keys, o.Rel)
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(keys); i += 1000 {
		if err := c.Remove(ctx, keys[i:min(i+1000, len(keys))]); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

// CheckBucket sends HeadBucket: it reports a bucket that does not exist
// or that the credentials cannot reach.
func (c *Client) CheckBucket(ctx context.Context) error {
	ctx, done, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer done()
	ok, err := c.mc.BucketExists(ctx, c.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("s3 bucket %s at %s: %w", c.cfg.Bucket, c.cfg.Endpoint, err)
	}
	if !ok {
		return fmt.Errorf("s3 bucket %s at %s: %w", c.cfg.Bucket, c.cfg.Endpoint, ErrNotFound)
	}
	return nil
}
