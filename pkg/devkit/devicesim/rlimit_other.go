//go:build !unix

package devicesim

// RaiseOpenFileLimit does nothing where there is no RLIMIT_NOFILE; it
// returns want and no error.
func RaiseOpenFileLimit(want uint64) (uint64, error) { return want, nil }
