package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/pbsfs/pbsfs/store"
	"github.com/pbsfs/pbsfs/store/crypto"
	"github.com/pbsfs/pbsfs/store/exclude"
	"github.com/pbsfs/pbsfs/store/pxar"
	"github.com/spf13/pflag"
)

// maxPaddingEnv names the environment variable holding the default
// --max-padding.
const maxPaddingEnv = "PBSFS_MAX_PADDING"

// changeDetectionEnv names the environment variable holding the default
// --change-detection-mode.
const changeDetectionEnv = "PBSFS_CHANGE_DETECTION_MODE"

// changeDetection returns the mode of pxar archives: the flag, else the
// environment, else legacy (the PBS client's default).
func (c *backupCmd) changeDetection() (string, error) {
	mode, from := c.detect, "--change-detection-mode"
	if mode == "" {
		mode, from = os.Getenv(changeDetectionEnv), changeDetectionEnv
	}
	switch mode {
	case "":
		if c.split {
			return "data", nil
		}
		return "legacy", nil
	case "legacy", "data", "metadata":
		if c.split && mode == "legacy" && from == "--change-detection-mode" {
			return "", usagef("--split with --change-detection-mode legacy")
		}
		if c.split && mode == "legacy" {
			return "data", nil
		}
		return mode, nil
	}
	return "", usagef("%s %q: want legacy, data or metadata", from, mode)
}

// backupMemoryHeadroom is the Go memory limit of a backup above its
// chunk memory budget: compressor state, directory listings, the
// hardlink map, buffers on their way back to the pool.
const backupMemoryHeadroom = 48 << 20

// backupCmd makes a snapshot, like proxmox-backup-client backup.
type backupCmd struct {
	ns         string
	typ        string
	id         string
	time       string
	owner      string
	split      bool
	detect     string
	excludes   []string
	maxPadding float64
	patterns   exclude.List
	reuse      pxar.ReuseStats
	pxars      int
	allFS      bool
	noProgress bool
	keys       keyOpts
	cryptMode  string
	skipped    int
	warnf      func(format string, a ...any)
}

func (c *backupCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (created if missing)")
	fs.StringVar(&c.typ, "type", "host", "backup type: host, vm or ct")
	fs.StringVar(&c.id, "id", "", "backup id, e.g. 100 or the host name (default: this host's name)")
	fs.StringVar(&c.time, "time", "", "backup time, RFC 3339 or Unix seconds (default: now)")
	fs.StringVar(&c.owner, "owner", store.DefaultOwner, "owner recorded for a new group")
	fs.BoolVar(&c.split, "split", false, "write pxar archives split into .mpxar and .ppxar (same as --change-detection-mode data)")
	fs.StringVar(&c.detect, "change-detection-mode", "", "legacy (one .pxar), data (split .mpxar/.ppxar, every file read) or metadata (split; files whose metadata is unchanged since the previous snapshot are not read) (env "+changeDetectionEnv+"; default legacy)")
	fs.Float64Var(&c.maxPadding, "max-padding", 0, "metadata mode: the most percent of reused old chunks' bytes that no unchanged file needs before those files are read again instead (env "+maxPaddingEnv+"; default 10, the PBS client's rule; 100 never reads an unchanged file)")
	fs.StringArrayVar(&c.excludes, "exclude", nil, "leave out paths matching a pattern (repeatable; the PBS client's syntax, as in .pxarexclude files, which are read too)")
	fs.BoolVar(&c.allFS, "all-file-systems", false, "cross mount points in pxar archives")
	fs.BoolVar(&c.noProgress, "no-progress", false, "never show progress")
	c.keys.addFlags(fs, "key file to encrypt (or sign) the backup with")
	fs.StringVar(&c.cryptMode, "crypt-mode", "", "encrypt, sign-only or none (default: encrypt when a key is found, else none)")
}

// archiveSpec is one NAME.TYPE:PATH argument.
type archiveSpec struct {
	name string // "drive-scsi0.img", "qemu-server.conf", "root.pxar"
	kind string // img, conf, log, pxar
	path string
}

func parseArchiveSpec(arg string) (archiveSpec, error) {
	name, p, ok := strings.Cut(arg, ":")
	if !ok || name == "" || p == "" {
		return archiveSpec{}, usagef("archive %q: want NAME.TYPE:PATH, e.g. drive-scsi0.img:/dev/sda", arg)
	}
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 {
		return archiveSpec{}, usagef("archive %q: name needs a type suffix .img, .conf, .log or .pxar", arg)
	}
	spec := archiveSpec{name: name, kind: name[dot+1:], path: p}
	switch spec.kind {
	case "img", "conf", "log", "pxar":
	default:
		return archiveSpec{}, usagef("archive %q: unknown type %q (want img, conf, log or pxar)", arg, spec.kind)
	}
	return spec, nil
}

func parseBackupTime(s string) (time.Time, error) {
	if s == "" {
		return time.Now().Truncate(time.Second), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--time %q: want RFC 3339 (2026-11-20T10:00:00Z) or Unix seconds", s)
	}
	return t, nil
}

// backupCacheBytes bounds the decoded-chunk cache of a backup.
const backupCacheBytes = 16 << 20

func (c *backupCmd) run(ctx context.Context, e *env, args []string) error {
	if p := os.Getenv("PBSFS_CPUPROFILE"); p != "" {
		// A CPU profile of the whole backup, for go tool pprof.
		if f, err := os.Create(p); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	if p := os.Getenv("PBSFS_TRACE"); p != "" {
		// An execution trace of the whole backup, for go tool trace: what
		// runs in sequence (the walk, the base's index, chunking, reads
		// of files, syncs) and where workers wait.
		if f, err := os.Create(p); err == nil {
			if err := trace.Start(f); err == nil {
				defer func() { trace.Stop(); f.Close() }()
			}
		}
	}
	if len(args) == 0 {
		return usagef("no ARCHIVE given")
	}
	var specs []archiveSpec
	for _, a := range args {
		spec, err := parseArchiveSpec(a)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
	}
	if c.id == "" {
		h, err := os.Hostname()
		if err != nil {
			return usagef("no --id and no host name: %v", err)
		}
		c.id = h
	}
	ns, err := store.ParseNamespace(c.ns)
	if err != nil {
		return usageError{err}
	}
	g := store.GroupRef{NS: ns, Type: c.typ, ID: c.id}
	if err := g.Validate(); err != nil {
		return usageError{err}
	}
	t, err := parseBackupTime(c.time)
	if err != nil {
		return err
	}
	if c.detect, err = c.changeDetection(); err != nil {
		return err
	}
	if c.maxPadding == 0 {
		c.maxPadding = 10
		if v := os.Getenv(maxPaddingEnv); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return usagef("%s %q: want a percentage", maxPaddingEnv, v)
			}
			c.maxPadding = f
		}
	}
	if c.maxPadding <= 0 || c.maxPadding > 100 {
		return usagef("--max-padding %g: want a percentage above 0, at most 100", c.maxPadding)
	}
	for _, x := range c.excludes {
		p, err := exclude.Parse(x)
		if err != nil {
			return usagef("--exclude %q: %v", x, err)
		}
		c.patterns = append(c.patterns, p)
	}
	opts := store.BackupOptions{Owner: c.owner}
	if opts.Key, opts.SignOnly, err = c.cryptOptions(ctx, e); err != nil {
		return err
	}
	// A backup reads the previous snapshot's split archive in order, run
	// by run (metadata mode, pxar.Previous.Payload): a small decoded-chunk
	// cache and read-ahead serve it, and keep the backup's peak memory
	// bounded (a mount's cache is 256 MiB).
	sopts := e.storeOptions()
	sopts.CacheBytes, sopts.ReadAheadBytes = backupCacheBytes, backupCacheBytes/4
	s, err := e.openStoreWith(sopts)
	if err != nil {
		return err
	}
	defer s.Close()
	if ns != "" {
		if err := s.CreateNamespace(ns); err != nil {
			return err
		}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The chunks in flight are bounded by the memory budget; the
		// limit makes the collector return their garbage before the heap
		// doubles, which keeps the peak RSS near the live memory.
		debug.SetMemoryLimit(store.DefaultMemoryBudget + backupMemoryHeadroom)
	}
	start := time.Now()
	b, err := s.StartBackup(ctx, g, t, opts)
	if err != nil {
		return err
	}
	c.warnf = func(format string, a ...any) {
		prog := fmt.Sprintf(format, a...)
		fmt.Fprintf(e.stderr, "warning: %s\n", prog)
	}
	prog := startProgress(e.stderr, !c.noProgress, func() string {
		return fmt.Sprintf("%s read, %d new chunks, %d reused", humanBytes(uint64(b.Stats.BytesRead.Load())),
			b.Stats.NewChunks.Load(), b.Stats.ReusedChunks.Load())
	})
	err = c.addArchives(ctx, b, specs)
	prog.stop()
	if err != nil {
		b.Abort()
		return err
	}
	if err := b.Finish(ctx); err != nil {
		return err
	}
	el := time.Since(start)
	read := b.Stats.BytesRead.Load()
	fmt.Fprintf(e.stdout, "snapshot %s\n", b.Ref())
	if opts.Key != nil {
		mode := "encrypt"
		if opts.SignOnly {
			mode = "sign-only"
		}
		fmt.Fprintf(e.stdout, "crypt-mode %s, key %s\n", mode, opts.Key.Fingerprint().Short())
	}
	if c.skipped > 0 {
		fmt.Fprintf(e.stdout, "%d unreadable entries skipped (see warnings)\n", c.skipped)
	}
	if c.pxars > 0 && c.detect != "legacy" {
		r := &c.reuse
		fmt.Fprintf(e.stdout, "change detection %s: %d files read, %d reused (%s) in %d chunks by reference, %d unchanged encoded afresh (padding; %d of them from the previous snapshot)\n",
			c.detect, r.FilesRead, r.FilesReused, humanBytes(r.BytesReused), b.Stats.InjectedChunks.Load(), r.FilesReencoded, r.FilesFromPrev)
	}
	fmt.Fprintf(e.stdout, "read %s, %d new chunks, %d reused, wrote %s in %s (%s/s)\n",
		humanBytes(uint64(read)), b.Stats.NewChunks.Load(), b.Stats.ReusedChunks.Load(),
		humanBytes(uint64(b.Stats.BytesWritten.Load())), el.Round(time.Millisecond),
		humanBytes(uint64(float64(read)/max(el.Seconds(), 1e-9))))
	return nil
}

// cryptOptions returns the key of the backup and whether it only signs,
// as the PBS client decides them (crypto.md §2.6): --crypt-mode none
// ignores every key; otherwise a key found is used, and encrypt or
// sign-only need one.
func (c *backupCmd) cryptOptions(ctx context.Context, e *env) (*crypto.Key, bool, error) {
	switch c.cryptMode {
	case "", "encrypt", "sign-only":
	case "none":
		if len(c.keys.files) > 0 {
			return nil, false, usagef("--keyfile with --crypt-mode none")
		}
		return nil, false, nil
	default:
		return nil, false, usagef("--crypt-mode %q: want encrypt, sign-only or none", c.cryptMode)
	}
	if len(c.keys.files) > 1 {
		return nil, false, usagef("backup takes one --keyfile")
	}
	kr, err := c.keys.load(ctx, e)
	if err != nil {
		return nil, false, err
	}
	keys := kr.Keys()
	if len(keys) == 0 {
		if c.cryptMode != "" {
			return nil, false, usagef("--crypt-mode %s needs a key: give --keyfile or set %s", c.cryptMode, keyFileEnv)
		}
		return nil, false, nil
	}
	return keys[0], c.cryptMode == "sign-only", nil
}

func (c *backupCmd) addArchives(ctx context.Context, b *store.Backup, specs []archiveSpec) error {
	for _, spec := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch spec.kind {
		case "img":
			if err := addImage(ctx, b, spec); err != nil {
				return err
			}
		case "pxar":
			st, err := os.Stat(spec.path)
			if err != nil {
				return fmt.Errorf("archive %s: %w", spec.name, err)
			}
			if !st.IsDir() {
				return fmt.Errorf("archive %s: %s is not a directory", spec.name, spec.path)
			}
			var rs pxar.ReuseStats
			c.pxars++
			n, err := b.AddPxar(ctx, spec.name, spec.path, store.PxarOptions{Split: c.detect == "data", Metadata: c.detect == "metadata",
				AllFileSystems: c.allFS, Stats: &rs, Exclude: c.patterns, MaxPadding: c.maxPadding / 100,
				OnError:   func(path string, err error) { c.warnf("skipped %s: %v", path, err) },
				OnWarning: func(path string, err error) { c.warnf("%s: %v", path, err) }})
			c.reuse.FilesRead += rs.FilesRead
			c.reuse.FilesReused += rs.FilesReused
			c.reuse.BytesReused += rs.BytesReused
			c.reuse.FilesReencoded += rs.FilesReencoded
			c.reuse.FilesFromPrev += rs.FilesFromPrev
			c.skipped += n
			if err != nil {
				return err
			}
		case "conf", "log":
			data, err := os.ReadFile(spec.path)
			if err != nil {
				return fmt.Errorf("archive %s: %w", spec.name, err)
			}
			if err := b.AddBlob(ctx, spec.name, data); err != nil {
				return err
			}
		}
	}
	return nil
}

// addImage backs up a regular file or block device as a fixed index.
func addImage(ctx context.Context, b *store.Backup, spec archiveSpec) error {
	f, err := os.Open(spec.path)
	if err != nil {
		return fmt.Errorf("archive %s: %w", spec.name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	switch {
	case st.Mode().IsRegular():
	case st.Mode()&os.ModeDevice != 0:
		if size, err = f.Seek(0, io.SeekEnd); err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			return fmt.Errorf("archive %s: size of %s: %w", spec.name, spec.path, err)
		}
	default:
		return fmt.Errorf("archive %s: %s is neither a file nor a block device", spec.name, spec.path)
	}
	err = b.AddImage(ctx, spec.name, f, uint64(size))
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("archive %s: %s shrank while it was read: %w", spec.name, spec.path, err)
	}
	return err
}
