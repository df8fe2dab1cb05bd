//go:build !unix

package devicesim

func readRusage(*Process) {}
