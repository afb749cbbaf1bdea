package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestKeyCommands(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("PBS_ENCRYPTION_PASSWORD", "first secret")
	def := filepath.Join(cfg, "proxmox-backup", "encryption-key.json")

	code, out, errs := cli(t, "key", "create", "--kdf", "pbkdf2", "--hint", "first")
	if code != 0 || !strings.Contains(out, def) {
		t.Fatalf("key create: %d %s %s", code, out, errs)
	}
	if st, err := os.Stat(def); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("default key file: %v %v", st, err)
	}
	before, _ := os.ReadFile(def)
	if code, _, errs := cli(t, "key", "create"); code != 1 || !strings.Contains(errs, "never overwritten") {
		t.Errorf("second create: %d %s", code, errs)
	}
	if after, _ := os.ReadFile(def); string(after) != string(before) {
		t.Error("key file changed by a refused create")
	}
	_, show, _ := cli(t, "key", "show")
	for _, want := range []string{"path: " + def, "kdf: pbkdf2", "hint: first", "fingerprint: "} {
		if !strings.Contains(show, want) {
			t.Errorf("key show lacks %q:\n%s", want, show)
		}
	}
	if code, _, errs := cli(t, "key", "create", "--kdf", "none", "--hint", "x", filepath.Join(cfg, "n.json")); code != 2 {
		t.Errorf("hint with kdf none: %d %s", code, errs)
	}
	if code, _, errs := cli(t, "key", "create", "--kdf", "rot13", filepath.Join(cfg, "n.json")); code != 2 {
		t.Errorf("bad kdf: %d %s", code, errs)
	}
	if code, _, errs := cli(t, "key", "frobnicate"); code != 2 {
		t.Errorf("bad subcommand: %d %s", code, errs)
	}

	// change-passphrase: the old password from PBS_ENCRYPTION_PASSWORD,
	// the new from PBSFS_NEW_ENCRYPTION_PASSWORD.
	t.Setenv("PBSFS_NEW_ENCRYPTION_PASSWORD", "second secret")
	if code, out, errs := cli(t, "key", "change-passphrase", "--kdf", "scrypt"); code != 0 {
		t.Fatalf("change-passphrase: %d %s %s", code, out, errs)
	}
	_, show2, _ := cli(t, "key", "show")
	fp := func(s string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "fingerprint: ") {
				return l
			}
		}
		return ""
	}
	if fp(show2) != fp(show) || !strings.Contains(show2, "kdf: scrypt") || strings.Contains(show2, "hint:") {
		t.Errorf("after change-passphrase:\n%s\nbefore:\n%s", show2, show)
	}
	if st, _ := os.Stat(def); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after change-passphrase %v", st.Mode())
	}
	// The old password no longer opens it.
	t.Setenv("PBS_ENCRYPTION_PASSWORD", "first secret")
	if code, _, errs := cli(t, "key", "change-passphrase"); code != 1 || !strings.Contains(errs, "unable to decrypt key (wrong password?)") {
		t.Errorf("change-passphrase with the old password: %d %s", code, errs)
	}
	if code, _, errs := cli(t, "key", "show", filepath.Join(cfg, "missing.json")); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("show of a missing file: %d %s", code, errs)
	}
}

func TestBackupCryptModes(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	_, flags := newStore(t)
	key := filepath.Join(cfg, "k.json")
	if code, _, errs := cli(t, "key", "create", "--kdf", "none", key); code != 0 {
		t.Fatal(errs)
	}
	src := filepath.Join(t.TempDir(), "f.conf")
	os.WriteFile(src, []byte("x=1\n"), 0o644)
	backup := func(extra ...string) (int, string, string) {
		args := append([]string{"backup", "--no-progress", "--type", "host", "--id", "h"}, flags...)
		return cli(t, append(append(args, extra...), "f.conf:"+src)...)
	}
	if code, _, errs := backup("--crypt-mode", "sign-only"); code != 2 || !strings.Contains(errs, "needs a key") {
		t.Errorf("sign-only without a key: %d %s", code, errs)
	}
	if code, _, errs := backup("--crypt-mode", "none", "--keyfile", key); code != 2 {
		t.Errorf("none with a key: %d %s", code, errs)
	}
	if code, _, errs := backup("--crypt-mode", "bogus"); code != 2 {
		t.Errorf("bogus mode: %d %s", code, errs)
	}
	code, out, errs := backup("--crypt-mode", "sign-only", "--keyfile", key, "--time", "2026-11-20T10:00:00Z")
	if code != 0 || !strings.Contains(out, "crypt-mode sign-only") {
		t.Fatalf("sign-only: %d %s %s", code, out, errs)
	}
	// Readable without a key; the manifest names the key.
	code, out, _ = cli(t, append([]string{"cat"}, append(flags, "host/h/2026-11-20T10:00:00Z", "f.conf")...)...)
	if code != 0 || out != "x=1\n" {
		t.Errorf("cat sign-only: %d %q", code, out)
	}
	code, out, _ = cli(t, append([]string{"cat"}, append(flags, "host/h/2026-11-20T10:00:00Z", "index.json")...)...)
	if code != 0 || !strings.Contains(out, `"crypt-mode": "sign-only"`) || !strings.Contains(out, `"key-fingerprint"`) {
		t.Errorf("manifest: %d %s", code, out)
	}
	// The default key is used when it exists: encrypt.
	os.MkdirAll(filepath.Join(cfg, "proxmox-backup"), 0o700)
	os.Rename(key, filepath.Join(cfg, "proxmox-backup", "encryption-key.json"))
	code, out, errs = backup("--time", "2026-11-20T11:00:00Z")
	if code != 0 || !strings.Contains(out, "crypt-mode encrypt") {
		t.Fatalf("default key: %d %s %s", code, out, errs)
	}
	code, out, _ = cli(t, append([]string{"cat"}, append(flags, "host/h/2026-11-20T11:00:00Z", "f.conf")...)...)
	if code != 0 || out != "x=1\n" {
		t.Errorf("cat with the default key: %d %q", code, out)
	}
}

// TestKeyShowJSON: key show --output json prints the PBS client's KeyInfo:
// path, kdf, created and modified in seconds since the epoch, the
// fingerprint the file records and the hint, the last two only when the
// file has them.
func TestKeyShowJSON(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PBS_ENCRYPTION_PASSWORD", "a secret")
	withHint := filepath.Join(dir, "hint.json")
	if code, out, errs := cli(t, "key", "create", "--kdf", "pbkdf2", "--hint", "the usual", withHint); code != 0 {
		t.Fatalf("key create: %d %s %s", code, out, errs)
	}
	// A key file as written by a client that recorded no fingerprint
	// (crypto.md §5.1's vector without its fingerprint).
	bare := filepath.Join(dir, "bare.json")
	os.WriteFile(bare, []byte(`{"kdf":null,"created":"2024-06-10T06:13:20+00:00","modified":"2024-06-10T07:13:20+00:00","data":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}`), 0o600)

	var file struct{ Created, Modified time.Time }
	raw, _ := os.ReadFile(withHint)
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	_, text, _ := cli(t, "key", "show", withHint)
	for _, tc := range []struct {
		args []string
		want map[string]any
	}{
		{[]string{"key", "show", "--output", "json", withHint}, map[string]any{
			"path": withHint, "kdf": "pbkdf2", "created": float64(file.Created.Unix()), "modified": float64(file.Modified.Unix()),
			"fingerprint": strings.TrimSpace(strings.SplitN(text[strings.Index(text, "fingerprint: ")+len("fingerprint: "):], "\n", 2)[0]),
			"hint":        "the usual"}},
		{[]string{"key", "show", "--output-format=json", bare}, map[string]any{
			"path": bare, "kdf": "none", "created": float64(1718000000), "modified": float64(1718003600)}},
	} {
		code, out, errs := cli(t, tc.args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", tc.args, code, errs)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: not JSON: %v\n%s", tc.args, err, out)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v:\n got %v\nwant %v", tc.args, got, tc.want)
		}
	}
	if fp, _ := regexp.MatchString(`^([0-9a-f]{2}:){31}[0-9a-f]{2}$`, fmt.Sprint(mustShowJSON(t, withHint)["fingerprint"])); !fp {
		t.Errorf("fingerprint not in the full colon-hex form: %v", mustShowJSON(t, withHint)["fingerprint"])
	}
}

func mustShowJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	_, out, _ := cli(t, "key", "show", "--output", "json", path)
	var got map[string]any
	json.Unmarshal([]byte(out), &got)
	return got
}

// TestKeyLoadGivesScryptMemoryBack fails if opening a scrypt key file
// leaves its 64 MiB of working memory in the heap: a mount would keep it
// as garbage beside its chunk cache, over its memory bound.
func TestKeyLoadGivesScryptMemoryBack(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PBS_ENCRYPTION_PASSWORD", "secret")
	p := filepath.Join(dir, "k.json")
	if code, out, errs := cli(t, "key", "create", "--kdf", "scrypt", p); code != 0 {
		t.Fatalf("key create: %d %s %s", code, out, errs)
	}
	runtime.GC()
	var stdout, stderr strings.Builder
	r, err := (&keyOpts{files: []string{p}}).load(context.Background(), newEnv(&stdout, &stderr))
	if err != nil || r == nil {
		t.Fatalf("load: %v", err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if held := ms.HeapInuse; held > 32<<20 {
		t.Errorf("heap in use after opening a scrypt key file: %d MiB, want under 32 MiB (scrypt's 64 MiB given back)", held>>20)
	}
	runtime.KeepAlive(r)
}
