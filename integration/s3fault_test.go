package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	idx, err := store.OpenIndex(filepath.Join(e.store, "vm/200", e.vm, "drive-scsi0.img.fidx"))
	if err != nil {
		t.Fatal(err)
	}
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
