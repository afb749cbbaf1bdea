package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// progress redraws one status line on a terminal until stopped. It does
// nothing when w is not a terminal.
type progress struct {
	done chan struct{}
	w    io.Writer
}

func startProgress(w io.Writer, enabled bool, status func() string) *progress {
	p := &progress{w: w}
	f, ok := w.(*os.File)
	if !enabled || !ok || !term.IsTerminal(int(f.Fd())) {
		return p
	}
	p.done = make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				fmt.Fprint(w, "\r\033[K")
				close(p.done)
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\033[K%s  %s", time.Since(start).Round(time.Second), status())
			}
		}
	}()
	return p
}

func (p *progress) stop() {
	if p.done != nil {
		p.done <- struct{}{}
		<-p.done
	}
}
