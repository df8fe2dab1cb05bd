//go:build unix

package devicesim

import (
	"fmt"
	"syscall"
)

// RaiseOpenFileLimit raises the process's soft limit of open files
// (RLIMIT_NOFILE) to at least want, raising the hard limit too when the
// process may (root). It never lowers a limit. It returns the soft limit in
// force afterwards; an error says the limit could not be read, or could not
// reach want (the limit is then as high as it would go).
func RaiseOpenFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("devicesim: reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return want, nil
		}
	}
	soft := min(want, lim.Max)
	if soft > lim.Cur {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: soft, Max: lim.Max}); err != nil {
			return lim.Cur, fmt.Errorf("devicesim: raising RLIMIT_NOFILE to %d: %w", soft, err)
		}
	}
	if soft < want {
		return soft, fmt.Errorf("devicesim: open-file limit is %d (hard limit), below the %d wanted", soft, want)
	}
	return soft, nil
}
