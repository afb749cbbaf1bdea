package fs

import "time"

// expiring is a map whose entries lapse ttl after they were put: the
// mount's short memories (perms of removed paths, groups a removal
// touched, unreadable directories). Its user holds the lock guarding it.
type expiring[K comparable, V any] struct {
	ttl time.Duration
	m   map[K]stamped[V]
}

// stamped is a value and when it was put.
type stamped[V any] struct {
	v  V
	at time.Time
}

func newExpiring[K comparable, V any](ttl time.Duration) expiring[K, V] {
	return expiring[K, V]{ttl: ttl, m: make(map[K]stamped[V])}
}

// get returns k's value if it was put less than ttl before now, and
// drops it once it lapsed.
func (e *expiring[K, V]) get(k K, now time.Time) (V, bool) {
	s, ok := e.m[k]
	if ok && now.Sub(s.at) >= e.ttl {
		delete(e.m, k)
		ok = false
	}
	if !ok {
		var zero V
		return zero, false
	}
	return s.v, true
}

// put sets k to v as of now, first dropping every lapsed entry, so the
// map holds at most what was put within ttl.
func (e *expiring[K, V]) put(k K, v V, now time.Time) {
	for k, s := range e.m {
		if now.Sub(s.at) >= e.ttl {
			delete(e.m, k)
		}
	}
	e.m[k] = stamped[V]{v, now}
}

// any reports whether some key not lapsed at now satisfies f.
func (e *expiring[K, V]) any(now time.Time, f func(K) bool) bool {
	for k, s := range e.m {
		if now.Sub(s.at) < e.ttl && f(k) {
			return true
		}
	}
	return false
}

// len is the number of entries, lapsed ones not yet dropped included.
func (e *expiring[K, V]) len() int { return len(e.m) }
