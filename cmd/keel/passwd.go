package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/keelmq/keel/engine/auth"
)

// keel passwd edits a password file in Mosquitto's format, as
// mosquitto_passwd does, writing $7$ hashes at 210,000 iterations that
// Mosquitto 2.0 and 2.1 read too.

const passwdUsageText = `Usage:
  keel passwd [-c] FILE USER             set USER's password (asked for twice)
  keel passwd [-c] -b FILE USER PASSWORD set USER's password from the command line
  keel passwd -D FILE USER               delete USER
  keel passwd -U FILE                    hash every plain-text password in FILE

  -c  create FILE, replacing one that exists
  -b  batch: the password is an argument (it shows in ps and shell history)
  -D  delete the user
  -U  upgrade a plain-text file: "user:password" lines become $7$ hashes;
      lines already hashed are kept as they are

Without a terminal the password is read as one line of standard input.
Exit status: 0 done, 1 failed, 2 usage error.
`

// passwdMain is keel passwd with the process's standard streams.
func passwdMain(args []string) int {
	return passwdCmd(args, os.Stdin, os.Stdout, os.Stderr)
}

func passwdCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keel passwd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	create := fs.Bool("c", false, "")
	batch := fs.Bool("b", false, "")
	del := fs.Bool("D", false, "")
	upgrade := fs.Bool("U", false, "")
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "keel passwd: %s\n\n%s", msg, passwdUsageText)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, passwdUsageText)
			return 0
		}
		return usage(err.Error())
	}
	rest := fs.Args()
	switch {
	case *create && *del, *create && *upgrade, *del && *upgrade, *batch && *del, *batch && *upgrade:
		return usage("-c, -D and -U exclude each other, and -b goes only with setting a password")
	case *upgrade && len(rest) != 1:
		return usage("-U takes FILE")
	case *del && len(rest) != 2:
		return usage("-D takes FILE USER")
	case *batch && len(rest) != 3:
		return usage("-b takes FILE USER PASSWORD")
	case !*upgrade && !*del && !*batch && len(rest) != 2:
		return usage("want FILE USER")
	}
	path := rest[0]
	fail := func(err error) int {
		fmt.Fprintln(stderr, "keel passwd:", err)
		return 1
	}

	var f *auth.PasswordFile
	if *create {
		f = auth.NewPasswordFile(path)
	} else {
		var err error
		if f, err = auth.ReadPasswordFile(path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fail(fmt.Errorf("%s does not exist (-c creates it)", path))
			}
			return fail(err)
		}
	}

	switch {
	case *upgrade:
		n, err := f.UpgradePlain()
		if err != nil {
			return fail(err)
		}
		if err := f.WriteFile(path); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "hashed %d plain-text password(s) in %s\n", n, path)
		return 0
	case *del:
		if !f.Delete(rest[1]) {
			return fail(fmt.Errorf("user %q is not in %s", rest[1], path))
		}
		if err := f.WriteFile(path); err != nil {
			return fail(err)
		}
		return 0
	}

	user := rest[1]
	if err := auth.ValidUsername(user); err != nil {
		return usage(fmt.Sprintf("user %q: %v", user, err))
	}
	var password string
	if *batch {
		password = rest[2]
	} else {
		var err error
		if password, err = readPassword(stdin, stderr); err != nil {
			return fail(err)
		}
	}
	if err := f.Set(user, password); err != nil {
		return fail(err)
	}
	if err := f.WriteFile(path); err != nil {
		return fail(err)
	}
	return 0
}

// readPassword asks for the password twice without echo on a terminal,
// and otherwise reads one line of stdin.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(stderr, "Reenter password: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords do not match")
		}
		if len(p1) == 0 {
			return "", errors.New("empty password")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", errors.New("no password on standard input")
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty password")
	}
	return line, nil
}
