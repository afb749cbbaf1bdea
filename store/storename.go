package store

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultDatastoreConfig is PBS's datastore configuration file.
const DefaultDatastoreConfig = "/etc/proxmox-backup/datastore.cfg"

// removableMountDir is where PBS 3.3+ mounts removable datastores, as
// <removableMountDir>/<name>.
const removableMountDir = "/mnt/datastore"

// Where a store's name came from (Store.NameSource).
const (
	NameFromOptions = "given"         // Options.Name (--store-name)
	NameFromConfig  = "datastore.cfg" // the name PBS gives the path
	NameFromPath    = "path"          // derived from the path, unique to it
)

// maxConfigSize bounds what is read of a datastore.cfg.
const maxConfigSize = 16 << 20

// safeName is PBS's SAFE_ID, the form of a datastore name.
var safeName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._\-]*$`)

// defaultName returns the name a store at root (absolute) gets when none
// is given: the name PBS's datastore.cfg (at cfgPath) gives that path, so
// that pbsfs and a running PBS use the same lock files; otherwise a name
// unique to the path (see pathName). A missing configuration is not an
// error; an unreadable one is, since guessing could put pbsfs's locks
// beside, not on, PBS's.
func defaultName(root, cfgPath string) (name, source string, err error) {
	f, err := os.Open(cfgPath)
	if errors.Is(err, fs.ErrNotExist) {
		return pathName(root), NameFromPath, nil
	}
	if err != nil {
		return "", "", fmt.Errorf("datastore name: %w", err)
	}
	defer f.Close()
	stores, err := parseDatastoreConfig(io.LimitReader(f, maxConfigSize))
	if err != nil {
		return "", "", fmt.Errorf("datastore name: %s: %w", cfgPath, err)
	}
	if name := configName(stores, root); name != "" {
		return name, NameFromConfig, nil
	}
	return pathName(root), NameFromPath, nil
}

// configStore is one `datastore:` section of datastore.cfg.
type configStore struct {
	name, path string
	removable  bool // has a backing-device: mounted at /mnt/datastore/<name>
}

// parseDatastoreConfig reads PBS's section-config format:
//
//	datastore: store1
//		path /mnt/datastore/store1
//		gc-schedule daily
//
// A section starts with "TYPE: ID" at the start of a line; its properties
// are indented "key value" lines; blank lines and lines starting with '#'
// are skipped. Sections of other types are ignored.
func parseDatastoreConfig(r io.Reader) ([]configStore, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var out []configStore
	var cur *configStore
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			typ, id, ok := strings.Cut(trimmed, ":")
			cur = nil
			if ok && strings.TrimSpace(typ) == "datastore" {
				out = append(out, configStore{name: strings.TrimSpace(id)})
				cur = &out[len(out)-1]
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, val, _ := strings.Cut(trimmed, " ")
		val = strings.TrimSpace(val)
		switch key {
		case "path":
			cur.path = val
		case "backing-device":
			cur.removable = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// configName returns the name of the store whose path is root, comparing
// cleaned paths and, where they resolve, their real paths.
func configName(stores []configStore, root string) string {
	want := realPath(root)
	for _, st := range stores {
		if !safeName.MatchString(st.name) {
			continue
		}
		p := st.path
		if st.removable {
			// path is relative to the device, which PBS mounts here.
			p = filepath.Join(removableMountDir, st.name)
		}
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		if filepath.Clean(p) == filepath.Clean(root) || realPath(p) == want {
			return st.name
		}
	}
	return ""
}

func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// pathName is the name of a store PBS does not know: the directory's base
// name (made a valid PBS name) and 8 hex digits of the SHA-256 of its real
// path, e.g. "pbs-3f9c0a1b". Two stores named /a/pbs and /b/pbs get
// different names and so different lock files.
func pathName(root string) string {
	real := realPath(root)
	sum := sha256.Sum256([]byte(real))
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		}
		return '_'
	}, filepath.Base(real))
	if len(base) > 24 {
		base = base[:24]
	}
	if base == "" || base[0] == '.' || base[0] == '-' {
		base = "store" + base
	}
	return base + "-" + hex.EncodeToString(sum[:4])
}
