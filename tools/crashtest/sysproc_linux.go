package main

import "syscall"

// sysProcAttr puts the broker in its own process group (a terminal's ^C
// reaches the tester, which then kills the broker itself) and has the
// kernel kill it if the tester dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
