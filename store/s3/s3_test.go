package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/pbsfs/pbsfs/internal/testutil"
)

var shared testutil.SharedS3

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// testClient returns a client of a fresh datastore name in the shared
// server's bucket.
func testClient(t *testing.T) *Client {
	t.Helper()
	srv := shared.Get(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "pbsfs-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "pbsfs-test-secret")
	c, err := New(Config{Endpoint: srv.Endpoint, Insecure: true, Bucket: srv.Bucket, Store: storeName(t), PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func storeName(t *testing.T) string {
	return fmt.Sprintf("t%d", nextStore())
}

var storeCounter int

func nextStore() int { storeCounter++; return storeCounter }

func TestClientObjects(t *testing.T) {
	c := testClient(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if existed, err := c.Put(ctx, "a/x", data, true); err != nil || existed {
		t.Fatalf("first conditional put: existed %v, %v", existed, err)
	}
	if existed, err := c.Put(ctx, "a/x", []byte("other"), true); err != nil || !existed {
		t.Fatalf("second conditional put: existed %v, %v (If-None-Match: * not honoured?)", existed, err)
	}
	got, info, err := c.Get(ctx, "a/x", 1<<20)
	if err != nil || !bytes.Equal(got, data) || info.Size != int64(len(data)) {
		t.Fatalf("get: %d bytes, %+v, %v", len(got), info, err)
	}
	if _, _, err := c.Get(ctx, "a/x", 100); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("get over limit: %v", err)
	}
	r, err := c.GetRange(ctx, "a/x", 1234, 10)
	if err != nil || !bytes.Equal(r, data[1234:1244]) {
		t.Fatalf("range: %q %v", r, err)
	}
	if _, _, err := c.Get(ctx, "a/nope", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	for _, k := range []string{"a/y", "ab/z", "a/b/c"} {
		if _, err := c.Put(ctx, k, []byte(k), false); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := c.List(ctx, "a/", func(o ObjectInfo) error { keys = append(keys, o.Rel); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	if fmt.Sprint(keys) != "[a/b/c a/x a/y]" {
		t.Fatalf("list a/: %v (ab/z must not match)", keys)
	}
	if err := c.List(ctx, "a", func(ObjectInfo) error { return nil }); err == nil {
		t.Fatal("a prefix without a trailing slash was listed")
	}
	n, err := c.RemovePrefix(ctx, "a/")
	if err != nil || n != 3 {
		t.Fatalf("remove prefix: %d %v", n, err)
	}
	keys = nil
	c.List(ctx, "", func(o ObjectInfo) error { keys = append(keys, o.Rel); return nil })
	if fmt.Sprint(keys) != "[ab/z]" {
		t.Fatalf("after removal: %v", keys)
	}
	t.Logf("requests: %s", c.Counts())
}

// TestGetInto: an object read into the caller's buffers, split as they
// ask; buffers of the wrong total length and objects over the limit are
// refused before the body is read, an error of bufs comes back as is.
func TestGetInto(t *testing.T) {
	c := testClient(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("abcdefghij"), 5000)
	if _, err := c.Put(ctx, ".chunks/x", data, false); err != nil {
		t.Fatal(err)
	}
	var hdr [12]byte
	rest := make([]byte, len(data)-12)
	info, err := c.GetInto(ctx, ".chunks/x", 1<<20, func(n int64) ([][]byte, error) {
		if n != int64(len(data)) {
			t.Errorf("bufs asked for %d bytes, want %d", n, len(data))
		}
		return [][]byte{hdr[:], rest}, nil
	})
	if err != nil || info.Size != int64(len(data)) || !bytes.Equal(append(hdr[:], rest...), data) {
		t.Fatalf("GetInto: %+v, %v", info, err)
	}
	if _, err := c.GetInto(ctx, ".chunks/x", 1<<20, func(n int64) ([][]byte, error) {
		return [][]byte{make([]byte, n-1)}, nil
	}); err == nil {
		t.Error("buffers one byte short were accepted")
	}
	called := false
	if _, err := c.GetInto(ctx, ".chunks/x", 100, func(n int64) ([][]byte, error) {
		called = true
		return [][]byte{make([]byte, n)}, nil
	}); !errors.Is(err, ErrTooLarge) || called {
		t.Errorf("over the limit: %v, bufs called: %v", err, called)
	}
	mine := errors.New("no memory for you")
	if _, err := c.GetInto(ctx, ".chunks/x", 1<<20, func(int64) ([][]byte, error) { return nil, mine }); err != mine {
		t.Errorf("error of bufs: %v", err)
	}
}
