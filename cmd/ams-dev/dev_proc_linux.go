package main

import (
	"syscall"
	"unsafe"
)

// devChildAttr: the private ClickHouse gets its own process group (a
// terminal's Ctrl-C reaches only ams-dev, which stops it after the sinks'
// last insert) and is killed if ams-dev dies without stopping it.
func devChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// termWidth returns the width of the terminal w is, 0 when unknown.
func termWidth(w any) int {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return 0
	}
	var ws struct{ Row, Col, X, Y uint16 }
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws))); e != 0 {
		return 0
	}
	return int(ws.Col)
}
