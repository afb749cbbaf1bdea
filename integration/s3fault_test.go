package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
)

// preadAt reads n bytes at off of the file at p.
func preadAt(p string, off int64, n int) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := f.ReadAt(b, off)
	if err == io.EOF && k == n {
		err = nil
	}
	return b[:k], err
}

// TestS3ServerDown stops the S3 server while the bucket is mounted: a
// read of a chunk not in the cache fails with EIO, the mount keeps
// serving what it has (listings, stat, cached chunks), and once the
// server is back the same read returns the right bytes.
func TestS3ServerDown(t *testing.T) {
	e := newS3Env(t)
	mnt := e.mountS3(t)
	img := filepath.Join(mnt, "vm/200", e.vm, "drive-scsi0.img")
	want, _ := os.ReadFile(e.img)
	const chunk = 4 << 20
	if b, err := preadAt(img, 100, 4096); err != nil || !bytes.Equal(b, want[100:4196]) {
		t.Fatalf("read before the stop: %v", err)
	}
	e.srv.Stop()
	restarted := false
	defer func() {
		if !restarted {
			e.srv.Start()
		}
	}()
	_, err := preadAt(img, 3*chunk+100, 4096)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of an uncached chunk with the server down: %v, want EIO", err)
	}
	if b, err := preadAt(img, 200, 4096); err != nil || !bytes.Equal(b, want[200:4296]) {
		t.Errorf("read of a cached chunk with the server down: %v", err)
	}
	if ents, err := os.ReadDir(filepath.Join(mnt, "vm/200")); err != nil || len(ents) == 0 {
		t.Errorf("listing with the server down: %v %v", ents, err)
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	b, err := preadAt(img, 3*chunk+100, 4096)
	if err != nil || !bytes.Equal(b, want[3*chunk+100:3*chunk+4196]) {
		t.Fatalf("the same read with the server back: %v", err)
	}
	if out, err := run("cmp", e.img, img); err != nil {
		t.Errorf("cmp after the restart: %v\n%s", err, out)
	}
}

// throttler is a reverse proxy in front of the S3 server that answers
// 503 SlowDown to the first n requests and then to every third, as S3
// does under load.
type throttler struct {
	n, seen, throttled atomic.Int64
	proxy              *httputil.ReverseProxy
}

func (p *throttler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := p.seen.Add(1)
	if k <= p.n.Load() || k%3 == 0 {
		p.throttled.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Resource>%s</Resource><RequestId>t</RequestId></Error>`, r.URL.Path)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

func startThrottler(t *testing.T, target string, n int64) (string, *throttler) {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	th := &throttler{proxy: httputil.NewSingleHostReverseProxy(u)}
	th.n.Store(n)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: th}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), th
}

// TestS3Throttled reads through a proxy that answers 503 SlowDown to the
// first requests: they are retried with backoff and the reads succeed.
func TestS3Throttled(t *testing.T) {
	e := newS3Env(t)
	addr, th := startThrottler(t, e.srv.Endpoint, 4)
	e.url = strings.Replace(e.url, e.srv.Endpoint, addr, 1)
	code, img, errs := e.s3(t, "cat", "vm/200/"+e.vm, "drive-scsi0.img")
	want, _ := os.ReadFile(e.img)
	if code != 0 || img != string(want) {
		t.Fatalf("cat through the throttling proxy: exit %d, %d of %d bytes (%d requests, %d throttled)\n%s", code, len(img), len(want), th.seen.Load(), th.throttled.Load(), errs)
	}
	if th.throttled.Load() < 6 {
		t.Fatalf("%d requests throttled, want the first 4 and every third", th.throttled.Load())
	}
	t.Logf("%d requests, %d answered 503 SlowDown and retried", th.seen.Load(), th.throttled.Load())
	// A server that keeps throttling: the command fails after its retries.
	th.n.Store(1 << 40)
	th.throttled.Store(0)
	if code, _, errs := e.s3(t, "cat", "vm/200/"+e.vm, "drive-scsi0.img"); code != 1 {
		t.Errorf("cat against a server that always throttles: exit %d, want 1\n%s", code, errs)
	}
}

// TestS3DeletedObject deletes one chunk object of the image: a read of
// its range fails with EIO, every other range reads, and verify names it.
func TestS3DeletedObject(t *testing.T) {
	e := newS3Env(t)
	idx := e.imageIndex(t)
	d, start, end := idx.Chunk(2)
	if err := e.c.Remove(context.Background(), []string{s3.ObjectRel(d.String())}); err != nil {
		t.Fatal(err)
	}
	mnt := e.mountS3(t)
	img := filepath.Join(mnt, "vm/200", e.vm, "drive-scsi0.img")
	want, _ := os.ReadFile(e.img)
	if _, err := preadAt(img, int64(start)+10, 4096); !errors.Is(err, syscall.EIO) {
		t.Errorf("read in the deleted chunk: %v, want EIO", err)
	}
	for i := range idx.Len() {
		if i == 2 {
			continue
		}
		_, s, e2 := idx.Chunk(i)
		n := int(min(e2-s, 1<<20))
		if b, err := preadAt(img, int64(s), n); err != nil || !bytes.Equal(b, want[s:s+uint64(n)]) {
			t.Errorf("chunk %d: %v", i, err)
		}
	}
	if b, err := preadAt(img, int64(start)-4096, 4096); err != nil || !bytes.Equal(b, want[start-4096:start]) {
		t.Errorf("the bytes right before the deleted chunk: %v", err)
	}
	if b, err := preadAt(img, int64(end), 4096); err != nil || !bytes.Equal(b, want[end:end+4096]) {
		t.Errorf("the bytes right after the deleted chunk: %v", err)
	}
	code, out, errs := e.s3(t, "verify")
	if code != 1 || !strings.Contains(out+errs, d.String()) {
		t.Errorf("verify with a deleted object: exit %d, want 1 naming %s\n%s%s", code, d, out, errs)
	}
}

// corruptObject replaces chunk object d by its bytes with one payload
// byte flipped and returns them.
func corruptObject(t *testing.T, c *s3.Client, d store.Digest) []byte {
	t.Helper()
	b, _, err := c.Get(context.Background(), s3.ObjectRel(d.String()), 32<<20)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x5a
	if _, err := c.Put(context.Background(), s3.ObjectRel(d.String()), b, false); err != nil {
		t.Fatal(err)
	}
	return b
}

// objectBytes returns chunk object name's bytes, nil if there is none.
func objectBytes(t *testing.T, c *s3.Client, name string) []byte {
	t.Helper()
	b, _, err := c.Get(context.Background(), s3.ObjectRel(name), 32<<20)
	if errors.Is(err, s3.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestS3VerifyRenamesCorrupt: verify moves a corrupt chunk object aside
// as PBS 4 does (rename_corrupt_chunk): copied to <digest>.<n>.bad and
// deleted, the local file (marker or chunk) renamed alike, with n the
// first number free locally and in the bucket. A collection afterwards
// handles the .bad objects (PBS 4.2's phase 2 built a wrong local path for
// them, spec A.7).
func TestS3VerifyRenamesCorrupt(t *testing.T) {
	e := newS3Env(t)
	idx := e.imageIndex(t)
	x, _, _ := idx.Chunk(1)
	y, _, _ := idx.Chunk(2)

	// The bucket alone: .0.bad is taken in the bucket (another machine's
	// verify), so the object becomes .1.bad.
	badX := corruptObject(t, e.c, x)
	older := []byte("an older bad copy")
	if _, err := e.c.Put(context.Background(), s3.ObjectRel(x.String()+".0.bad"), older, false); err != nil {
		t.Fatal(err)
	}
	code, out, errs := e.s3(t, "verify")
	if want := x.String() + ".1.bad"; code != 1 || !strings.Contains(out+errs, "renamed to "+want) {
		t.Fatalf("verify of a corrupt object: exit %d, want 1 and 'renamed to %s'\n%s%s", code, want, out, errs)
	}
	if objectBytes(t, e.c, x.String()) != nil {
		t.Error("the corrupt object is still under its digest")
	}
	if b := objectBytes(t, e.c, x.String()+".1.bad"); !bytes.Equal(b, badX) {
		t.Errorf("%s.1.bad holds %d bytes, want the corrupt object's %d", x, len(b), len(badX))
	}
	if b := objectBytes(t, e.c, x.String()+".0.bad"); !bytes.Equal(b, older) {
		t.Errorf("the older .0.bad was overwritten: %q", b)
	}

	// A PBS cache directory: its .0.bad is taken locally; the marker and
	// the object both become .1.bad.
	cache, _, _ := e.pbsCache(t, 1000, 0) // every chunk evicted to a marker
	local := filepath.Join(cache, ".chunks", y.String()[:4], y.String())
	if err := os.WriteFile(local+".0.bad", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	badY := corruptObject(t, e.c, y)
	flags := []string{"--s3-endpoint", e.srv.Endpoint, "--s3-http", "--s3-bucket", e.srv.Bucket, "--store-name", e.c.Config().Store}
	envs := append([]string{"PBSFS_STORE=" + cache}, s3Creds...)
	code, out, errs = e.tryEnv(envs, append([]string{"verify"}, flags...)...)
	if want := y.String() + ".1.bad"; code != 1 || !strings.Contains(out+errs, "renamed to "+want) {
		t.Fatalf("verify through the cache: exit %d, want 1 and 'renamed to %s'\n%s%s", code, want, out, errs)
	}
	if _, err := os.Lstat(local); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the marker of the corrupt chunk is still there: %v", err)
	}
	if _, err := os.Lstat(local + ".1.bad"); err != nil {
		t.Errorf("the marker was not renamed to .1.bad: %v", err)
	}
	if objectBytes(t, e.c, y.String()) != nil || !bytes.Equal(objectBytes(t, e.c, y.String()+".1.bad"), badY) {
		t.Errorf("object %s not moved to .1.bad", y)
	}
	// The collection sees the .bad objects, keeps them (young), and does
	// not trip over their local files.
	code, out, errs = e.tryEnv(envs, append([]string{"gc"}, flags...)...)
	if code != 0 {
		t.Fatalf("gc after the renames: exit %d\n%s%s", code, out, errs)
	}
	for _, n := range []string{x.String() + ".0.bad", x.String() + ".1.bad", y.String() + ".1.bad"} {
		if objectBytes(t, e.c, n) == nil {
			t.Errorf("gc removed the young bad copy %s", n)
		}
	}
}

// imageIndex opens the fixed index of the env's image snapshot.
func (e *s3Env) imageIndex(t *testing.T) store.Index {
	t.Helper()
	idx, err := store.OpenIndex(filepath.Join(e.store, "vm/200", e.vm, "drive-scsi0.img.fidx"))
	if err != nil {
		t.Fatal(err)
	}
	return idx
}
