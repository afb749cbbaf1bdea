package integration

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbsfs/pbsfs/internal/testutil"
	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/s3"
)

// s3srv is the SeaweedFS server the S3 tests share (stopped by TestMain).
var s3srv testutil.SharedS3

// s3Creds are the credentials the tests give pbsfs and the client.
var s3Creds = []string{"AWS_ACCESS_KEY_ID=pbsfs-test", "AWS_SECRET_ACCESS_KEY=pbsfs-test-secret"}

// s3Client returns a client of datastore name in the shared bucket.
func s3Client(t testing.TB, srv *testutil.S3Server, name string) *s3.Client {
	t.Helper()
	c, err := s3.New(s3.Config{Endpoint: srv.Endpoint, Insecure: true, Bucket: srv.Bucket, Store: name,
		PathStyle: true, AccessKey: "pbsfs-test", SecretKey: "pbsfs-test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// uploadPBS4 copies the datastore at root into the bucket in PBS 4's
// layout (pbs4.md §A.2): chunk files to `.chunks/<4hex>/<64hex>`, the
// metadata below `.cnt/`, a `.namespace` object per namespace; `.lock`,
// `.gc-status` and temporary files stay behind. It returns the number of
// chunk objects.
func uploadPBS4(t testing.TB, c *s3.Client, root string) int {
	t.Helper()
	ctx := context.Background()
	chunks := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
			return nil
		case d.IsDir():
			if rel == ".chunks" || strings.HasPrefix(rel, ".chunks/") {
				return nil
			}
			if strings.HasPrefix(filepath.Base(rel), ".") {
				return filepath.SkipDir
			}
			if filepath.Base(filepath.Dir(rel)) == "ns" { // <...>/ns/<name>: a namespace
				_, err := c.Put(ctx, ".cnt/"+rel+"/.namespace", nil, true)
				return err
			}
			return nil
		case strings.HasPrefix(rel, ".chunks/"):
			if !store.IsChunkName(d.Name()) {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			chunks++
			_, err = c.Put(ctx, rel, b, true)
			return err
		case strings.HasPrefix(d.Name(), ".") && d.Name() != ".protected", strings.Contains(d.Name(), ".tmp_"):
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = c.Put(ctx, ".cnt/"+rel, b, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return chunks
}

// s3Env is a datastore written on disk by pbsfs backup and its copy in
// the bucket.
type s3Env struct {
	*env
	srv    *testutil.S3Server
	c      *s3.Client
	url    string
	src    string
	info   treeInfo
	img    string
	tree   string // snapshot holding root.pxar
	vm     string // snapshot holding drive-scsi0.img
	chunks int
}

// s3Base is the datastore the S3 tests copy into the bucket, written
// once per test binary (a tree of every entry kind and an image).
var s3Base struct {
	once            sync.Once
	err             error
	dir, store, src string
	img, tree, vm   string
	info            treeInfo
}

func newS3Env(t *testing.T) *s3Env {
	t.Helper()
	srv := s3srv.Get(t)
	b := &s3Base
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "pbsfs-s3base-"); b.err != nil {
			return
		}
		base := &env{store: filepath.Join(b.dir, "store"), run: filepath.Join(b.dir, "run")}
		s, err := store.Create(base.store, store.Options{RuntimeDir: base.run, LazyChunkDirs: true})
		if err != nil {
			b.err = err
			return
		}
		s.Close()
		b.store, b.src, b.img = base.store, filepath.Join(b.dir, "src"), filepath.Join(b.dir, "disk.img")
		b.info = genTree(t, b.src, 300)
		randomFile(t, b.img, 13<<20+4321, 5)
		conf := filepath.Join(b.dir, "qemu-server.conf")
		os.WriteFile(conf, []byte("memory: 2048\n"), 0o644)
		b.tree = base.backup(t, "ct", "100", t0, "root.pxar:"+b.src)
		b.vm = base.backup(t, "vm", "200", t0, "drive-scsi0.img:"+b.img, "qemu-server.conf:"+conf)
	})
	if b.err != nil || b.store == "" {
		t.Fatalf("base datastore: %v", b.err)
	}
	e := &s3Env{env: &env{store: b.store, run: t.TempDir()}, srv: srv, src: b.src, info: b.info, img: b.img, tree: b.tree, vm: b.vm}
	name := strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-")
	e.c = s3Client(t, srv, name)
	e.chunks = uploadPBS4(t, e.c, e.store)
	e.url = "s3+http://" + srv.Endpoint + "/" + srv.Bucket + "/" + name
	return e
}

// s3 runs the binary on the bucket (stdout and stderr apart).
func (e *s3Env) s3(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return e.tryEnv(append([]string{"PBSFS_STORE=" + e.url, "PBSFS_S3_CACHE_DIR=" + filepath.Join(e.run, "s3cache")}, s3Creds...), args...)
}

// TestS3BucketAlone copies a datastore pbsfs wrote on disk into the
// bucket in PBS 4's layout and opens it from the bucket alone: snapshots,
// verify, cat and restore give what they give on disk, and the mount
// shows the same trees (entry by entry) and images (byte for byte).
func TestS3BucketAlone(t *testing.T) {
	e := newS3Env(t)
	t.Logf("%d chunk objects uploaded", e.chunks)

	_, want, _ := e.tryEnv(nil, "snapshots")
	code, got, errs := e.s3(t, "snapshots")
	if code != 0 || got != want {
		t.Fatalf("snapshots from the bucket (exit %d): %q\non disk: %q\n%s", code, got, want, errs)
	}
	if code, out, errs := e.s3(t, "verify"); code != 0 {
		t.Fatalf("verify from the bucket: exit %d\n%s%s", code, out, errs)
	}
	code, img, errs := e.s3(t, "cat", "vm/200/"+e.vm, "drive-scsi0.img")
	wantImg, _ := os.ReadFile(e.img)
	if code != 0 || img != string(wantImg) {
		t.Fatalf("cat of the image from the bucket: exit %d, %d bytes of %d\n%s", code, len(img), len(wantImg), errs)
	}
	target := filepath.Join(t.TempDir(), "restore")
	if code, out, errs := e.s3(t, "restore", "--no-progress", "ct/100/"+e.tree, "root.pxar", target); code != 0 {
		t.Fatalf("restore from the bucket: exit %d\n%s%s", code, out, errs)
	}
	args := []string{"-r", "--no-dereference"}
	for _, s := range e.info.specials {
		args = append(args, "-x", s)
	}
	if out, err := run("diff", append(args, e.src, target)...); err != nil {
		t.Errorf("diff -r of the restored tree: %v\n%.2000s", err, out)
	}

	disk, _ := e.mount(t)
	bucket := e.mountS3(t)
	compareMounts(t, disk, bucket, e)
}

// mountS3 mounts the bucket (its own cache directory) and returns the
// mount point.
func (e *s3Env) mountS3(t *testing.T, extra ...string) string {
	t.Helper()
	testutil.RequireFUSE(t)
	mnt := t.TempDir()
	args := append(append([]string{"mount"}, extra...), e.url, mnt)
	env := append([]string{"PBSFS_RUNTIME_DIR=" + e.run, "PBSFS_S3_CACHE_DIR=" + filepath.Join(e.run, "s3cache")}, s3Creds...)
	startMount(t, mnt, env, bin, args...)
	return mnt
}

// compareMounts compares the tree and the image of e's snapshots in two
// mounts: stat of every entry, xattrs, contents, and the image bytes.
func compareMounts(t *testing.T, want, got string, e *s3Env) {
	t.Helper()
	wroot := filepath.Join(want, "ct/100", e.tree, "root.pxar")
	groot := filepath.Join(got, "ct/100", e.tree, "root.pxar")
	diffLines(t, "stat", statLines(t, groot), statLines(t, wroot))
	diffLines(t, "xattrs", xattrs(t, groot), xattrs(t, wroot))
	args := []string{"-r", "--no-dereference"}
	for _, s := range e.info.specials {
		args = append(args, "-x", s)
	}
	if out, err := run("diff", append(args, wroot, groot)...); err != nil {
		t.Errorf("diff -r of the trees: %v\n%.2000s", err, out)
	}
	for _, m := range []string{want, got} {
		if out, err := run("cmp", e.img, filepath.Join(m, "vm/200", e.vm, "drive-scsi0.img")); err != nil {
			t.Errorf("cmp image in %s: %v\n%s", m, err, out)
		}
	}
	a, _ := os.ReadFile(filepath.Join(want, "vm/200", e.vm, "qemu-server.conf"))
	b, err := os.ReadFile(filepath.Join(got, "vm/200", e.vm, "qemu-server.conf"))
	if err != nil || !bytes.Equal(a, b) {
		t.Errorf("qemu-server.conf: %q vs %q (%v)", b, a, err)
	}
	if out, err := exec.Command("ls", "-R", got).CombinedOutput(); err != nil {
		t.Errorf("ls -R: %v\n%s", err, out)
	}
}

// pbsCache copies e's datastore as a PBS S3 datastore's local cache
// directory: all metadata, and of the chunks only every keep-th with its
// content; the others are evicted to 0-byte files (pbs4.md §A.4), every
// drop-th of those removed entirely. It returns the directory and the
// numbers of full and empty chunk files.
func (e *s3Env) pbsCache(t *testing.T, keep, drop int) (string, int, int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	if out, err := run("cp", "-a", e.store, dir); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	full, empty, i := 0, 0, 0
	filepath.WalkDir(filepath.Join(dir, ".chunks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !store.IsChunkName(d.Name()) {
			return err
		}
		i++
		switch {
		case i%keep == 0:
			full++
		case drop > 0 && i%drop == 0:
			os.Remove(p)
		default:
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
			empty++
		}
		return nil
	})
	return dir, full, empty
}

// TestS3PBSCache opens a PBS S3 datastore's cache directory, most of
// whose chunks were evicted to 0-byte files, with its bucket: a 0-byte
// file is fetched from the bucket, never taken for corrupt. Without the
// bucket the same directory fails on those chunks.
func TestS3PBSCache(t *testing.T) {
	e := newS3Env(t)
	cache, full, empty := e.pbsCache(t, 4, 7)
	t.Logf("cache: %d chunks kept, %d evicted to 0 bytes", full, empty)
	if empty < 2*full {
		t.Fatalf("want most chunks evicted: %d full, %d empty", full, empty)
	}
	flags := []string{"--s3-endpoint", e.srv.Endpoint, "--s3-http", "--s3-bucket", e.srv.Bucket, "--store-name", e.c.Config().Store}
	envs := append([]string{"PBSFS_STORE=" + cache}, s3Creds...)
	if code, out, errs := e.tryEnv(envs, append([]string{"verify"}, flags...)...); code != 0 {
		t.Fatalf("verify of the cache with its bucket: exit %d\n%s%s", code, out, errs)
	}
	code, img, errs := e.tryEnv(envs, append([]string{"cat", "vm/200/" + e.vm, "drive-scsi0.img"}, flags...)...)
	wantImg, _ := os.ReadFile(e.img)
	if code != 0 || img != string(wantImg) {
		t.Fatalf("cat through the cache: exit %d, %d of %d bytes\n%s", code, len(img), len(wantImg), errs)
	}
	// Without the bucket, the evicted chunks are not there.
	if code, _, _ := e.tryEnv([]string{"PBSFS_STORE=" + cache}, "cat", "vm/200/"+e.vm, "drive-scsi0.img"); code != 1 {
		t.Errorf("cat of the cache without its bucket: exit %d, want 1", code)
	}

	disk, _ := e.mount(t)
	mnt := t.TempDir()
	startMount(t, mnt, append([]string{"PBSFS_RUNTIME_DIR=" + e.run}, s3Creds...), bin, append(append([]string{"mount"}, flags...), cache, mnt)...)
	compareMounts(t, disk, mnt, e)
	// The cache is PBS's: reading through it changed none of its chunk files.
	_, full2, empty2 := countChunkFiles(t, cache)
	if full2 != full || empty2 != empty {
		t.Errorf("chunk files after the reads: %d full, %d empty; before %d, %d", full2, empty2, full, empty)
	}
}

// countChunkFiles counts the chunk files below root/.chunks: all, those
// with content and the empty ones.
func countChunkFiles(t *testing.T, root string) (all, full, empty int) {
	t.Helper()
	filepath.WalkDir(filepath.Join(root, ".chunks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !store.IsChunkName(d.Name()) {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		all++
		if fi.Size() == 0 {
			empty++
		} else {
			full++
		}
		return nil
	})
	return
}

// chunkObjects lists the chunk objects of c's datastore.
func chunkObjects(t *testing.T, c *s3.Client) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := c.List(context.Background(), ".chunks/", func(o s3.ObjectInfo) error {
		if n := s3.ChunkName(o.Rel); n != "" {
			out[n] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// objectCount counts the objects below rel ("" or ending in '/').
func objectCount(t *testing.T, c *s3.Client, rel string) int {
	t.Helper()
	n := 0
	if err := c.List(context.Background(), rel, func(s3.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// referencedChunks returns the digests every index file below root
// refers to.
func referencedDigests(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".chunks" {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(p); ext != ".fidx" && ext != ".didx" {
			return nil
		}
		idx, err := store.OpenIndex(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := range idx.Len() {
			dg, _, _ := idx.Chunk(i)
			out[dg.String()] = true
		}
		return nil
	})
	return out
}

// TestS3BackupRemoveGC backs up into a bucket, removes snapshots with
// rm -r through the mount and with forget (a protected one is refused),
// and collects with aged markers: every remaining snapshot verifies, the
// bucket holds exactly the referenced chunks (and the self-test's zero
// chunk), and a collection is refused while .in-use names a PBS host.
func TestS3BackupRemoveGC(t *testing.T) {
	srv := s3srv.Get(t)
	e := &s3Env{env: newEnv(t), srv: srv}
	name := "backup-gc"
	e.c = s3Client(t, srv, name)
	e.url = "s3+http://" + srv.Endpoint + "/" + srv.Bucket + "/" + name
	cache := filepath.Join(e.run, "s3cache", strings.ReplaceAll(srv.Endpoint, ":", "_"), srv.Bucket, name)
	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := e.s3(t, args...)
		if code != 0 {
			t.Fatalf("pbsfs %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	src := filepath.Join(t.TempDir(), "src")
	genTree(t, src, 200)
	imgA, imgB := filepath.Join(t.TempDir(), "a.img"), filepath.Join(t.TempDir(), "b.img")
	randomFile(t, imgA, 9<<20, 1)
	randomFile(t, imgB, 9<<20, 2)
	ts := func(i int) string { return t0.Add(time.Duration(i) * time.Hour).UTC().Format(time.RFC3339) }
	snap := func(i int) string { return t0.Add(time.Duration(i) * time.Hour).UTC().Format("2006-01-02T15:04:05Z") }
	ok("init")
	ok("backup", "--no-progress", "--type", "vm", "--id", "200", "--time", ts(0), "drive-scsi0.img:"+imgA)
	if code, _, errs := e.s3(t, "init"); code != 1 || !strings.Contains(errs, "already") {
		t.Errorf("init of a datastore in the bucket: exit %d, %s", code, errs)
	}
	ok("backup", "--no-progress", "--type", "vm", "--id", "200", "--time", ts(1), "drive-scsi0.img:"+imgB)
	ok("backup", "--no-progress", "--type", "ct", "--id", "100", "--time", ts(0), "root.pxar:"+src)
	randomFile(t, filepath.Join(src, "new.bin"), 3<<20, 3)
	ok("backup", "--no-progress", "--type", "ct", "--id", "100", "--time", ts(1), "root.pxar:"+src)
	ok("backup", "--no-progress", "--type", "ct", "--id", "100", "--time", ts(2), "root.pxar:"+src)
	before := chunkObjects(t, e.c)
	if n := objectCount(t, e.c, ".cnt/vm/200/"+snap(0)+"/"); n < 2 {
		t.Fatalf("%d objects of vm/200/%s in the bucket, want its index and manifest", n, snap(0))
	}
	if n := objectCount(t, e.c, ".cnt/"); n < 10 {
		t.Fatalf("%d metadata objects in the bucket", n)
	}
	ok("verify")
	// Written where PBS writes: a chunk marker per uploaded chunk.
	if all, full, empty := countChunkFiles(t, cache); all != len(before) || full != 0 {
		t.Errorf("cache: %d chunk files (%d with content, %d empty) for %d chunk objects; want a 0-byte marker each", all, full, empty, len(before))
	}

	t.Run("rm -r through the mount", func(t *testing.T) {
		mnt := e.mountS3(t)
		if out, err := run("rm", "-r", filepath.Join(mnt, "vm/200", snap(0))); err != nil {
			t.Fatalf("rm -r: %v\n%s", err, out)
		}
		if n := objectCount(t, e.c, ".cnt/vm/200/"+snap(0)+"/"); n != 0 {
			t.Errorf("%d objects of the removed snapshot left in the bucket", n)
		}
		if _, err := os.Stat(filepath.Join(cache, "vm/200", snap(0))); !os.IsNotExist(err) {
			t.Errorf("removed snapshot still in the cache directory: %v", err)
		}
	})
	// prune: a third image backup, keep the newest: vm/200's second goes.
	ok("backup", "--no-progress", "--type", "vm", "--id", "200", "--time", ts(2), "drive-scsi0.img:"+imgA)
	ok("prune", "--keep-last", "1", "vm/200")
	if n := objectCount(t, e.c, ".cnt/vm/200/"+snap(1)+"/"); n != 0 {
		t.Errorf("%d objects of a pruned snapshot left in the bucket", n)
	}
	if n := objectCount(t, e.c, ".cnt/vm/200/"+snap(2)+"/"); n < 2 {
		t.Errorf("the kept snapshot has %d objects", n)
	}
	ok("protect", "ct/100/"+snap(1))
	if _, err := e.c.Stat(context.Background(), ".cnt/ct/100/"+snap(1)+"/.protected"); err != nil {
		t.Errorf(".protected object: %v", err)
	}
	if code, _, errs := e.s3(t, "forget", "ct/100/"+snap(1)); code != 1 || !strings.Contains(errs, "protected") {
		t.Errorf("forget of a protected snapshot: exit %d, %s", code, errs)
	}
	ok("unprotect", "ct/100/"+snap(1))
	ok("forget", "ct/100/"+snap(0))
	ok("forget", "ct/100/"+snap(1))
	if n := objectCount(t, e.c, ".cnt/ct/100/"+snap(1)+"/"); n != 0 {
		t.Errorf("%d objects of a forgotten snapshot left in the bucket", n)
	}

	// Nothing is old yet: a collection removes nothing.
	out := ok("gc")
	fresh := chunkObjects(t, e.c)
	if len(fresh) < len(before) {
		t.Fatalf("a collection with fresh markers removed %d chunk objects\n%s", len(before)-len(fresh), out)
	}
	if _, err := e.c.Put(context.Background(), ".in-use", []byte(`{"hostname":"pbs-node1"}`), false); err != nil {
		t.Fatal(err)
	}
	testutil.AgeChunks(cache, time.Now().Add(-72*time.Hour))
	code, _, errs := e.s3(t, "gc")
	if code != 1 || !strings.Contains(errs, `.in-use names PBS host "pbs-node1"`) {
		t.Fatalf("gc beside a PBS host: exit %d, want 1 and the .in-use refusal\n%s", code, errs)
	}
	t.Logf("refusal: %s", strings.TrimSpace(errs))
	if after := chunkObjects(t, e.c); len(after) != len(fresh) {
		t.Fatalf("the refused collection removed %d objects", len(fresh)-len(after))
	}
	if err := e.c.Remove(context.Background(), []string{".in-use"}); err != nil {
		t.Fatal(err)
	}
	out = ok("gc")
	t.Logf("gc:\n%s", out)
	after := chunkObjects(t, e.c)
	want := referencedDigests(t, cache)
	want["bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"] = true // the atime self-test's zero chunk
	for d := range want {
		if !after[d] {
			t.Errorf("referenced chunk %s lost", d)
		}
	}
	for d := range after {
		if !want[d] {
			t.Errorf("unreferenced chunk %s left", d)
		}
	}
	t.Logf("chunk objects: %d before, %d after the collection, %d referenced", len(before), len(after), len(want)-1)
	if len(after) >= len(before) {
		t.Errorf("nothing collected")
	}
	ok("verify")
	if out := ok("snapshots"); strings.Count(out, "\n") < 2 {
		t.Errorf("snapshots after the collection:\n%s", out)
	}
}
