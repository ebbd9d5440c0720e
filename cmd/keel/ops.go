package main

import "io"

// opsCmd runs the operator subcommands: inspect (inspectcmd.go), backup
// and restore (backup.go). main.go dispatches them here in one line.
func opsCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	switch cmd {
	case "inspect":
		return inspectCmd(args, stdout, stderr)
	case "backup":
		return backupCmd(args, stdout, stderr)
	case "restore":
		return restoreCmd(args, stdout, stderr)
	}
	panic("opsCmd: " + cmd)
}
