// Command loopback mounts a directory through go-fuse's loopback file
// system: the baseline the pbsfs mount benchmarks compare against, so
// that both sides pay for FUSE.
//
//	loopback ORIGINAL MOUNTPOINT
//
// It serves until SIGINT or SIGTERM, then unmounts. Every read is served
// by this daemon: the files hide go-fuse's PassthroughFd, with which the
// kernel (as root) would read the backing file itself and the baseline
// would not pay for FUSE.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: loopback ORIGINAL MOUNTPOINT")
		os.Exit(2)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(os.Args[1], &st); err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
	lr := &fusefs.LoopbackRoot{Path: os.Args[1], Dev: uint64(st.Dev)}
	lr.NewNode = func(r *fusefs.LoopbackRoot, _ *fusefs.Inode, _ string, _ *syscall.Stat_t) fusefs.InodeEmbedder {
		return &daemonNode{LoopbackNode: fusefs.LoopbackNode{RootData: r}}
	}
	root := lr.NewNode(lr, nil, "", &st)
	lr.RootNode = root
	srv, err := fusefs.Mount(os.Args[2], root, &fusefs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: os.Args[1], Name: "loopback", MaxReadAhead: 1 << 20, MaxWrite: 1 << 20,
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-sig:
		if err := srv.Unmount(); err != nil {
			fmt.Fprintln(os.Stderr, "loopback: unmount:", err)
			os.Exit(1)
		}
		<-done
	case <-done:
	}
}

// daemonNode is a loopback node whose open files are served by the daemon.
type daemonNode struct{ fusefs.LoopbackNode }

func (n *daemonNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if lf, ok := fh.(*fusefs.LoopbackFile); ok {
		return &daemonFile{lf}, fl, errno
	}
	return fh, fl, errno
}

// daemonFile is a loopback file without kernel passthrough.
type daemonFile struct{ *fusefs.LoopbackFile }

// PassthroughFd hides the backing file from the kernel.
func (*daemonFile) PassthroughFd() (int, bool) { return -1, false }
