package store

import (
	"errors"
	"testing"
	"time"
)

func TestParseSnapshot(t *testing.T) {
	tests := []struct {
		ns, in  string
		want    string // Dir()
		wantErr error
	}{
		{"", "vm/100/2026-11-20T10:00:00Z", "vm/100/2026-11-20T10:00:00Z", nil},
		{"", "ns/a/ns/b/host/web1/2026-11-20T10:00:00Z", "ns/a/ns/b/host/web1/2026-11-20T10:00:00Z", nil},
		{"a", "ct/my-host.example/2026-11-20T10:00:00Z", "ns/a/ct/my-host.example/2026-11-20T10:00:00Z", nil},
		{"", "vm/100/2026-11-20T10:00:00+01:00", "", ErrInvalidName},
		{"", "vm/100/2026-11-20T10:00:00.5Z", "", ErrInvalidName},
		{"", "vm/100/1970-01-01T00:00:00Z", "", ErrInvalidName},
		{"", "lxc/100/2026-11-20T10:00:00Z", "", ErrInvalidName},
		{"", "vm/-x/2026-11-20T10:00:00Z", "", ErrInvalidName},
		{"", "vm/../2026-11-20T10:00:00Z", "", ErrInvalidName},
		{"", "vm/100", "", ErrInvalidName},
		{"", "ns/a/b/c/d/e/f/g/h/vm/1/2026-11-20T10:00:00Z", "", ErrInvalidName},
		{"", "ns/1/ns/2/ns/3/ns/4/ns/5/ns/6/ns/7/ns/8/vm/1/2026-11-20T10:00:00Z", "", ErrInvalidName},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			ref, err := ParseSnapshot(Namespace(tc.ns), tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if err == nil && ref.Dir() != tc.want {
				t.Fatalf("Dir() = %q, want %q", ref.Dir(), tc.want)
			}
		})
	}
	ref, _ := ParseSnapshot("", "vm/100/2026-11-20T10:00:00Z")
	if !ref.Time.Equal(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)) || ref.String() != "vm/100/2026-11-20T10:00:00Z" {
		t.Errorf("ref %v", ref)
	}
}

func TestNamespace(t *testing.T) {
	ns, err := ParseNamespace("a/b/c")
	if err != nil || ns.Dir() != "ns/a/ns/b/ns/c" || ns.Depth() != 3 {
		t.Fatalf("%q %v", ns.Dir(), err)
	}
	for _, bad := range []string{"a//b", ".a", "a/../b", "1/2/3/4/5/6/7/8"} {
		if _, err := ParseNamespace(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseNamespace(%q) = %v", bad, err)
		}
	}
}
