package listener

import (
	"crypto/tls"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// ciphers takes a mosquitto.conf's OpenSSL names and IANA names alike;
// insecure suites and OpenSSL's keyword strings are refused by name.
func TestParseCiphers(t *testing.T) {
	got, err := ParseCiphers("ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, ECDHE-RSA-AES256-GCM-SHA384")
	want := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ParseCiphers = %v, %v; want %v", got, err, want)
	}
	for in, wantErr := range map[string]string{
		"AES128-SHA":                   `"AES128-SHA" is insecure`,
		"TLS_RSA_WITH_AES_128_CBC_SHA": `"TLS_RSA_WITH_AES_128_CBC_SHA" is insecure`,
		"ECDHE-RSA-AES128-SHA256":      `is insecure`,
		"HIGH:!aNULL":                  `"HIGH" is an OpenSSL cipher string keyword`,
		"ECDHE-RSA-NONSENSE":           `unknown TLS 1.2 cipher suite "ECDHE-RSA-NONSENSE"`,
		"":                             `want one or more`,
	} {
		if _, err := ParseCiphers(in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseCiphers(%q) = %v, want an error with %q", in, err, wantErr)
		}
	}
}

// The OpenSSL names are OpenSSL's own: `openssl ciphers -stdname` agrees
// with every entry of the table.
func TestOpenSSLCipherNamesAgree(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is missing: .ci/run installs it")
		}
		t.Skip("openssl is not installed")
	}
	for name, iana := range openSSLCiphers {
		out, err := exec.Command("openssl", "ciphers", "-stdname", name).Output()
		if err != nil {
			t.Fatalf("openssl ciphers -stdname %s: %v", name, err)
		}
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[2] == name {
				found = true
				if f[0] != iana {
					t.Errorf("openssl names %s %s, the table %s", name, f[0], iana)
				}
			}
		}
		if !found {
			t.Errorf("openssl does not know %s:\n%s", name, out)
		}
	}
}
