// Package crypto implements the client-side encryption of Proxmox Backup
// Server: key files as the PBS client writes them (kdf none, scrypt,
// PBKDF2), the key derivations (id_key, fingerprint), the AES-256-GCM
// framing of encrypted DataBlobs, keyed chunk digests and the HMAC that
// signs manifests. The facts are in shared/spec/crypto.md; section numbers
// in comments refer to it, and "datastore.md §N" to the datastore spec.
//
// The package knows nothing of compression or the datastore layout: the
// store package encodes and decodes blobs with it.
package crypto
