package lock

import "fmt"

// Name checks. The store package validates names fully; these checks only
// make sure a name cannot step out of the lock directory or the store
// (spec §1.3, §1.4 regexes).

// isSafeID reports whether s matches ^[A-Za-z0-9_][A-Za-z0-9._\-]*$.
func isSafeID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z':
		case (c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// isBackupTime reports whether s has the form YYYY-MM-DDTHH:MM:SSZ.
func isBackupTime(s string) bool {
	const form = "dddd-dd-ddTdd:dd:ddZ"
	if len(s) != len(form) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if form[i] == 'd' {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		} else if s[i] != form[i] {
			return false
		}
	}
	return true
}

func checkGroup(ns []string, typ, id string) error {
	if len(ns) > maxNamespaceDepth {
		return fmt.Errorf("namespace depth %d over %d: %w", len(ns), maxNamespaceDepth, ErrInvalidName)
	}
	for _, c := range ns {
		if !isSafeID(c) {
			return fmt.Errorf("namespace component %q: %w", c, ErrInvalidName)
		}
	}
	if !isSafeID(typ) {
		return fmt.Errorf("backup type %q: %w", typ, ErrInvalidName)
	}
	if !isSafeID(id) {
		return fmt.Errorf("backup id %q: %w", id, ErrInvalidName)
	}
	return nil
}

func checkSnapshot(ns []string, typ, id, backupTime string) error {
	if err := checkGroup(ns, typ, id); err != nil {
		return err
	}
	if !isBackupTime(backupTime) {
		return fmt.Errorf("backup time %q: %w", backupTime, ErrInvalidName)
	}
	return nil
}
