//go:build !linux

package main

import "syscall"

// devChildAttr: the private ClickHouse gets its own process group, so a
// terminal's Ctrl-C reaches only ams-dev, which stops it after the sinks.
func devChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// termWidth returns the width of the terminal w is, 0 when unknown.
func termWidth(any) int { return 0 }
