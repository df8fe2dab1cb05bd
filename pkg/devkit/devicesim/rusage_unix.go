//go:build unix

package devicesim

import (
	"runtime"
	"syscall"
)

func readRusage(p *Process) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return
	}
	p.CPUUserS = float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6
	p.CPUSysS = float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
	maxrss := int64(ru.Maxrss)
	if runtime.GOOS != "darwin" { // Linux and the BSDs report kilobytes, macOS bytes
		maxrss *= 1024
	}
	p.MaxRSSBytes = maxrss
}
