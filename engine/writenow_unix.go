//go:build unix

package engine

import "syscall"

const canWriteNow = true

// writeNow writes b to the connection's socket without waiting: the
// descriptor is non-blocking (Go's poller owns it), so a full send buffer
// returns EAGAIN at once. It returns how many bytes the kernel took; on any
// error the caller leaves the rest to the writeLoop, whose ordinary Write
// waits for room or reports the error and closes the connection.
func writeNow(rc syscall.RawConn, b []byte) int {
	n := 0
	_ = rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // never wait for writability: that is the writeLoop's job
	})
	return n
}
