package fs

import (
	"testing"
	"time"
)

func TestExpiring(t *testing.T) {
	e := newExpiring[string, int](time.Minute)
	t0 := time.Unix(1_700_000_000, 0)
	e.put("a", 1, t0)
	e.put("b", 2, t0.Add(30*time.Second))
	if v, ok := e.get("a", t0.Add(59*time.Second)); !ok || v != 1 {
		t.Errorf("a before its ttl: %d %v", v, ok)
	}
	if _, ok := e.get("a", t0.Add(time.Minute)); ok {
		t.Error("a at its ttl still there")
	}
	if e.len() != 1 {
		t.Errorf("len %d after a lapsed get, want 1 (a dropped)", e.len())
	}
	if !e.any(t0.Add(80*time.Second), func(k string) bool { return k == "b" }) {
		t.Error("b not found before its ttl")
	}
	if e.any(t0.Add(90*time.Second), func(string) bool { return true }) {
		t.Error("a lapsed entry counted by any")
	}
	e.put("c", 3, t0.Add(2*time.Minute)) // drops b
	if e.len() != 1 {
		t.Errorf("len %d after put, want 1 (lapsed entries dropped)", e.len())
	}
}
