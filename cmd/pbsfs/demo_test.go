package main

import (
	"testing"

	"github.com/pbsfs/pbsfs/gc"
	"github.com/pbsfs/pbsfs/store"
)

// TestDemoMountDefaults: demo mounts with the defaults `pbsfs mount` has
// (a demo whose mount command missed a new flag's default exited 2).
func TestDemoMountDefaults(t *testing.T) {
	m := defaultMountCmd()
	if m.cacheSize != store.DefaultCacheBytes {
		t.Errorf("cache size %d, want %d", m.cacheSize, store.DefaultCacheBytes)
	}
	if m.gcCutoff != gc.PBSSafety().Cutoff {
		t.Errorf("gc cutoff %v, want %v", m.gcCutoff, gc.PBSSafety().Cutoff)
	}
	if m.shutdownWait == 0 || m.logFormat != "text" {
		t.Errorf("shutdown wait %v, log format %q", m.shutdownWait, m.logFormat)
	}
}
