//go:build !linux

package main

// statfs is not implemented off Linux: there keel runs without the
// low-water mark by default, and refuses to start with min_free_disk set
// explicitly (serve).
func statfs(dir string) (free, total uint64, err error) { return 0, 0, errNoStatfs }
