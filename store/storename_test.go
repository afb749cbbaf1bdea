package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testDatastoreCfg = `# written by PBS
datastore: backup1
	comment main store
	gc-schedule daily
	path /srv/pbs/one

datastore: usb
	backing-device 4a1b0c7e-1234
	path /

datastore:  spaced  
    path   /srv/pbs/spaced/

s3-endpoint: wrong-type
	path /srv/pbs/one-more
`

func TestParseDatastoreConfig(t *testing.T) {
	got, err := parseDatastoreConfig(strings.NewReader(testDatastoreCfg))
	if err != nil {
		t.Fatal(err)
	}
	want := []configStore{
		{name: "backup1", path: "/srv/pbs/one"},
		{name: "usb", path: "/", removable: true},
		{name: "spaced", path: "/srv/pbs/spaced/"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("store %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	for root, name := range map[string]string{
		"/srv/pbs/one": "backup1", "/srv/pbs/one/": "backup1", "/srv/pbs/spaced": "spaced",
		"/mnt/datastore/usb": "usb", "/srv/pbs/one-more": "", "/srv/pbs": "",
	} {
		if got := configName(got, filepath.Clean(root)); got != name {
			t.Errorf("configName(%s) = %q, want %q", root, got, name)
		}
	}
}

func TestDefaultName(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a", "pbs"), filepath.Join(dir, "b", "pbs")
	noCfg := filepath.Join(dir, "none.cfg")
	na, src, err := defaultName(a, noCfg)
	if err != nil || src != NameFromPath {
		t.Fatalf("no config: %q, %q, %v", na, src, err)
	}
	nb, _, _ := defaultName(b, noCfg)
	if na == nb || !strings.HasPrefix(na, "pbs-") || !safeName.MatchString(na) {
		t.Errorf("/a/pbs and /b/pbs named %q and %q: want distinct valid names starting pbs-", na, nb)
	}
	if again, _, _ := defaultName(a, noCfg); again != na {
		t.Errorf("name not stable: %q then %q", na, again)
	}
	// A symlink to the store names the same store.
	os.MkdirAll(a, 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(a, link)
	if nl, _, _ := defaultName(link, noCfg); nl != na {
		t.Errorf("through a symlink: %q, want %q", nl, na)
	}
	for _, odd := range []string{"/", "/srv/.hidden", "/srv/white space"} {
		if n := pathName(odd); !safeName.MatchString(n) {
			t.Errorf("pathName(%q) = %q: not a valid datastore name", odd, n)
		}
	}
	cfg := filepath.Join(dir, "datastore.cfg")
	os.WriteFile(cfg, []byte("datastore: store-a\n\tpath "+a+"\n"), 0o644)
	if n, src, err := defaultName(a, cfg); err != nil || n != "store-a" || src != NameFromConfig {
		t.Errorf("configured: %q, %q, %v; want store-a from %s", n, src, err, NameFromConfig)
	}
	if n, src, _ := defaultName(b, cfg); n != nb || src != NameFromPath {
		t.Errorf("not configured: %q, %q; want %q", n, src, nb)
	}
	// A configuration that exists but cannot be read is an error, not a
	// guess beside PBS's locks.
	if _, _, err := defaultName(a, dir); err == nil {
		t.Error("unreadable configuration: no error")
	}
}

func TestOpenNames(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "pbs")
	cfg := filepath.Join(dir, "datastore.cfg")
	os.WriteFile(cfg, []byte("datastore: main\n\tpath "+root+"\n"), 0o644)
	s, err := Create(root, Options{RuntimeDir: t.TempDir(), LazyChunkDirs: true, DatastoreConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name() != "main" || s.NameSource() != NameFromConfig {
		t.Errorf("name %q from %s, want main from %s", s.Name(), s.NameSource(), NameFromConfig)
	}
	s2, err := Open(root, Options{Name: "given", DatastoreConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Name() != "given" || s2.NameSource() != NameFromOptions {
		t.Errorf("name %q from %s, want given", s2.Name(), s2.NameSource())
	}
	if _, err := Open(root, Options{DatastoreConfig: dir}); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("unreadable config: %v", err)
	}
}
