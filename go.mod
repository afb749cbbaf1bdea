module github.com/pbsfs/pbsfs

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/klauspost/compress v1.20.4
	github.com/spf13/pflag v1.1.0
	golang.org/x/crypto v0.52.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)
