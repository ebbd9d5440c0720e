//go:build !unix

package engine

import "syscall"

const canWriteNow = false

func writeNow(syscall.RawConn, []byte) int { return 0 }
