package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/pbsfs/pbsfs/store/crypto"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// Encryption keys on the command line: --keyfile on the commands that
// read or write data, and the key subcommands (crypto.md §2.6).

// keyFileEnv names a key file when no --keyfile is given.
const keyFileEnv = "PBSFS_KEYFILE"

// newPasswordEnv is the base name of the variables (with _FD, _FILE,
// _CMD) that give key change-passphrase its new password without a
// terminal.
const newPasswordEnv = "PBSFS_NEW_ENCRYPTION_PASSWORD"

// defaultKeyPath returns the PBS client's default key file,
// $XDG_CONFIG_HOME/proxmox-backup/encryption-key.json.
func defaultKeyPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "proxmox-backup", "encryption-key.json"), nil
}

// keyOpts is the --keyfile flag of a command.
type keyOpts struct {
	files []string
}

func (k *keyOpts) addFlags(fs *pflag.FlagSet, usage string) {
	fs.StringArrayVar(&k.files, "keyfile", nil, usage+" (env "+keyFileEnv+"; default: the PBS client's encryption-key.json when it exists)")
}

// load returns the keys a command works with: those of --keyfile, else
// the one $PBSFS_KEYFILE names, else the client's default key when it
// exists. A default key that needs a password nobody gave is skipped
// with a warning; every other failure is an error.
func (k *keyOpts) load(ctx context.Context, e *env) (*crypto.Keyring, error) {
	r := &crypto.Keyring{}
	paths, explicit := k.files, true
	if len(paths) == 0 {
		if p := os.Getenv(keyFileEnv); p != "" {
			paths = []string{p}
		} else if p, err := defaultKeyPath(); err == nil {
			if _, err := os.Stat(p); err == nil {
				paths, explicit = []string{p}, false
			}
		}
	}
	for _, p := range paths {
		key, _, err := crypto.LoadKey(p, passwordFor(ctx, p))
		if err != nil {
			if !explicit && errors.Is(err, crypto.ErrNoPassword) {
				fmt.Fprintf(e.stderr, "warning: default key %s not used: %v\n", p, err)
				continue
			}
			return nil, err
		}
		r.Add(key)
	}
	if len(paths) > 0 {
		// A scrypt key file takes 64 MiB of working memory to open.
		// Give it back now: a mount would otherwise keep it as garbage
		// beside its chunk cache (the heap's next collection is paced
		// from that peak), 64 MiB over the memory bound it promises.
		debug.FreeOSMemory()
	}
	return r, nil
}

// passwordFor returns the password source of key file path: the PBS
// client's environment variables, else a prompt on the terminal.
func passwordFor(ctx context.Context, path string) crypto.PasswordFunc {
	return func() ([]byte, error) {
		pw, ok, err := crypto.EnvSecret(ctx, crypto.PasswordEnv, nil)
		if ok || err != nil {
			return pw, err
		}
		return promptPassword(fmt.Sprintf("Encryption Key Password for %s: ", path), crypto.PasswordEnv)
	}
}

// promptPassword reads a password from the controlling terminal.
func promptPassword(prompt, env string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return nil, fmt.Errorf("%w: set %s (or %s_FD, _FILE, _CMD), or run on a terminal", crypto.ErrNoPassword, env, env)
	}
	defer tty.Close()
	fmt.Fprint(tty, prompt)
	pw, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	return pw, err
}

// newPassword returns a new password from the variables of env, or asks
// twice on the terminal.
func newPassword(ctx context.Context, env string) ([]byte, error) {
	pw, ok, err := crypto.EnvSecret(ctx, env, nil)
	if ok || err != nil {
		return pw, err
	}
	pw, err = promptPassword("Encryption Key Password: ", env)
	if err != nil {
		return nil, err
	}
	again, err := promptPassword("Verify Password: ", env)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pw, again) {
		return nil, errors.New("passwords do not match")
	}
	return pw, nil
}

// keyCmd manages key files as proxmox-backup-client key does.
type keyCmd struct {
	kdf    string
	hint   string
	output outputFormat
}

func (c *keyCmd) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.kdf, "kdf", "scrypt", "create, change-passphrase: key derivation, none (key in clear), scrypt or pbkdf2")
	fs.StringVar(&c.hint, "hint", "", "create, change-passphrase: password hint stored in the file")
	outputFlag(fs, &c.output)
}

// keyInfo is what key show prints with --output json: the PBS client's
// KeyInfo (times in seconds since the epoch; fingerprint, the one the
// file records, and hint left out when absent).
type keyInfo struct {
	Path        string `json:"path"`
	KDF         string `json:"kdf"`
	Created     int64  `json:"created"`
	Modified    int64  `json:"modified"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

const keyUsage = "want create|show|change-passphrase [PATH] (PATH defaults to the PBS client's encryption-key.json)"

func (c *keyCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || len(args) > 2 {
		return usagef(keyUsage)
	}
	path := ""
	if len(args) == 2 {
		path = args[1]
	} else {
		p, err := defaultKeyPath()
		if err != nil {
			return err
		}
		path = p
	}
	kdf, err := crypto.ParseKDF(c.kdf)
	if err != nil {
		return usageError{err}
	}
	if kdf == crypto.KDFNone && c.hint != "" {
		return usagef("--hint needs a password (--kdf scrypt or pbkdf2)")
	}
	switch args[0] {
	case "create":
		return c.create(ctx, e, path, kdf)
	case "show":
		return c.show(e, path)
	case "change-passphrase":
		return c.changePassphrase(ctx, e, path, kdf)
	}
	return usagef("unknown key command %q: %s", args[0], keyUsage)
}

func (c *keyCmd) create(ctx context.Context, e *env, path string, kdf crypto.KDF) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("key file %s exists; it is never overwritten", path)
	}
	var pw []byte
	if kdf != crypto.KDFNone {
		var err error
		if pw, err = newPassword(ctx, crypto.PasswordEnv); err != nil {
			return err
		}
	}
	var raw [crypto.KeySize]byte
	if _, err := crand.Read(raw[:]); err != nil {
		return err
	}
	kc, err := crypto.NewKeyConfig(raw, kdf, pw, c.hint, time.Now())
	clear(raw[:])
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := kc.WriteNew(path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s exists; it is never overwritten", path)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "created %s (kdf %s)\nfingerprint: %s\n", path, kdf, kc.Fingerprint)
	return nil
}

func (c *keyCmd) show(e *env, path string) error {
	kc, err := crypto.ReadKeyConfig(path)
	if err != nil {
		return err
	}
	if c.output == outputJSON {
		info := keyInfo{Path: path, KDF: fmt.Sprint(kc.KDFName()), Created: kc.Created.Unix(), Modified: kc.Modified.Unix(), Hint: kc.Hint}
		if kc.Fingerprint != nil {
			info.Fingerprint = kc.Fingerprint.String()
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(e.stdout, "path: %s\nkdf: %s\ncreated: %s\nmodified: %s\n", path, kc.KDFName(),
		kc.Created.Local().Format(time.RFC3339), kc.Modified.Local().Format(time.RFC3339))
	if kc.Fingerprint != nil {
		fmt.Fprintf(e.stdout, "fingerprint: %s\n", kc.Fingerprint)
	}
	if kc.Hint != "" {
		fmt.Fprintf(e.stdout, "hint: %s\n", kc.Hint)
	}
	return nil
}

func (c *keyCmd) changePassphrase(ctx context.Context, e *env, path string, kdf crypto.KDF) error {
	kc, err := crypto.ReadKeyConfig(path)
	if err != nil {
		return err
	}
	var pw []byte
	if kdf != crypto.KDFNone {
		if pw, err = newPassword(ctx, newPasswordEnv); err != nil {
			return err
		}
	}
	if err := kc.ChangePassphrase(passwordFor(ctx, path), kdf, pw, c.hint, time.Now()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := kc.Replace(path); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "changed the password of %s (kdf %s)\n", path, kdf)
	return nil
}
