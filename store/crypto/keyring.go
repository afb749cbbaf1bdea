package crypto

// Keyring holds the keys a process was given, found by fingerprint: each
// snapshot is read with the key its manifest names. The zero Keyring is
// empty; a nil *Keyring is empty too. It is not safe for concurrent
// changes, but safe for concurrent lookups once built.
type Keyring struct {
	keys  map[Fingerprint]*Key
	order []*Key
}

// Add adds k; a key already present is not added twice.
func (r *Keyring) Add(k *Key) {
	if r.keys == nil {
		r.keys = map[Fingerprint]*Key{}
	}
	if _, ok := r.keys[k.fp]; ok {
		return
	}
	r.keys[k.fp] = k
	r.order = append(r.order, k)
}

// Lookup returns the key with fingerprint fp.
func (r *Keyring) Lookup(fp Fingerprint) (*Key, bool) {
	if r == nil {
		return nil, false
	}
	k, ok := r.keys[fp]
	return k, ok
}

// Keys returns the keys in the order they were added.
func (r *Keyring) Keys() []*Key {
	if r == nil {
		return nil
	}
	return r.order
}

// Len returns the number of keys.
func (r *Keyring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.order)
}
