// Command loopback mounts a directory through go-fuse's loopback file
// system: the baseline the pbsfs mount benchmarks compare against, so
// that both sides pay for FUSE.
//
//	loopback ORIGINAL MOUNTPOINT
//
// It serves until SIGINT or SIGTERM, then unmounts.
package main

import (
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
	root, err := fusefs.NewLoopbackRoot(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
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
