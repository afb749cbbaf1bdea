package main

import (
	"bufio"
	"context"
	"fmt"
	"strings"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// catCmd writes an archive's decoded bytes to stdout.
type catCmd struct {
	ns   string
	keys keyOpts
}

func (c *catCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ns, "ns", "", "namespace (default: the root namespace, or an ns/… prefix of SNAPSHOT)")
	c.keys.addFlags(fs, "key file for an encrypted snapshot")
}

func (c *catCmd) run(ctx context.Context, e *env, args []string) (err error) {
	if len(args) != 2 {
		return usagef("want SNAPSHOT and ARCHIVE")
	}
	if e.keys, err = c.keys.load(ctx, e); err != nil {
		return err
	}
	s, si, err := openSnapshot(e, c.ns, args[0])
	if err != nil {
		return err
	}
	defer s.Close()
	file, err := s.ResolveArchive(si, args[1])
	if err != nil {
		return err
	}
	if isTerminal(e.stdout) && binaryArchive(file) {
		return fmt.Errorf("%s of %s is a %s: not writing its raw bytes to a terminal; redirect them (pbsfs cat %s %s > FILE), %s",
			args[1], pathOf(si.Ref), describeArchive(file), args[0], args[1], nextStep(file, args[0], args[1]))
	}
	w := bufio.NewWriterSize(e.stdout, 1<<20)
	if store.KindOf(file) == store.KindBlob {
		data, err := s.ReadBlob(si.Ref, file)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Flush()
	}
	a, err := s.OpenArchive(ctx, si.Ref, file)
	if err != nil {
		return err
	}
	if _, err := a.WriteTo(w); err != nil {
		return err
	}
	return w.Flush()
}

// binaryArchive reports whether an archive file holds bytes no terminal
// shows: a pxar stream or a disk image (blobs are configs and logs).
func binaryArchive(file string) bool {
	return store.KindOf(file) == store.KindFixed || isPxar(file)
}

func isPxar(file string) bool {
	for _, ext := range []string{".pxar.didx", ".mpxar.didx", ".ppxar.didx"} {
		if strings.HasSuffix(file, ext) {
			return true
		}
	}
	return false
}

func describeArchive(file string) string {
	if isPxar(file) {
		return "pxar archive"
	}
	return "disk image"
}

// nextStep suggests what to do with a binary archive instead.
func nextStep(file, snap, name string) string {
	if isPxar(file) {
		return fmt.Sprintf("extract it (pbsfs restore %s %s DIR) or browse it (pbsfs mount STORE MOUNTPOINT)", snap, name)
	}
	return fmt.Sprintf("restore it (pbsfs restore %s %s FILE) or mount the store and loop-mount the image", snap, name)
}
