package main

import (
	"context"
	"fmt"

	"github.com/pbsfs/pbsfs/store"
	"github.com/spf13/pflag"
)

// initCmd creates a datastore.
type initCmd struct{}

func (c *initCmd) flags(fs *pflag.FlagSet) {}

func (c *initCmd) run(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one STORE directory")
	}
	s, err := store.Create(args[0], e.storeOptions())
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(e.stdout, "created datastore %s (name %q)\n", s.Root(), s.Name())
	return nil
}
