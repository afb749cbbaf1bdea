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
	switch {
	case len(args) == 1:
		if err := e.storeArg(args[0]); err != nil {
			return err
		}
	case len(args) > 1 || e.storePath == "":
		return usagef("want one STORE directory, e.g. pbsfs init /srv/ds")
	}
	if e.isS3() {
		return e.initS3(ctx)
	}
	s, err := store.Create(e.storePath, e.storeOptions())
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(e.stdout, "created datastore %s (name %q)\n", s.Root(), s.Name())
	return nil
}
