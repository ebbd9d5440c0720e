package listener

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TLSFiles name a listener's TLS material. The fields are mosquitto.conf's
// keys of the same meaning, and FileError names a failure by that key.
type TLSFiles struct {
	CertFile string // certfile: the server's certificate chain (PEM)
	KeyFile  string // keyfile: its private key (PEM)
	CAFile   string // cafile: CAs client certificates are verified against (PEM)
	CAPath   string // capath: a directory of such CA files (every regular file in it)
	CRLFile  string // crlfile: revoked client certificates (PEM or DER), signed by one of those CAs
	// RequireCertificate (require_certificate) refuses a client without a
	// certificate that verifies. Without it a certificate is verified if
	// one is given.
	RequireCertificate bool
	MinVersion         uint16   // tls_version: tls.VersionTLS12 (0 means this) or tls.VersionTLS13
	CipherSuites       []uint16 // ciphers: for TLS 1.2 (1.3's are fixed); nil: Go's defaults
}

// FileError is TLS material that could not be used; Key is the config
// key that named it.
type FileError struct {
	Key  string
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s %s: %v", e.Key, e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// LoadTLS reads f and returns the server's tls.Config for one generation
// of the files. Every file is read and checked now: the key against its
// certificate, the CRL's signature against the CAs.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, &FileError{Key: "certfile", Path: f.CertFile, Err: errors.New("TLS needs both certfile and keyfile")}
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, &FileError{"certfile", f.CertFile, err}
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, &FileError{"keyfile", f.KeyFile, err}
	}
	if _, err := parseCerts(certPEM); err != nil {
		return nil, &FileError{"certfile", f.CertFile, err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &FileError{"keyfile", f.KeyFile, err}
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: f.CipherSuites,
	}
	if f.MinVersion != 0 {
		cfg.MinVersion = f.MinVersion
	}
	var cas []*x509.Certificate
	if f.CAFile != "" {
		b, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, &FileError{"cafile", f.CAFile, err}
		}
		c, err := parseCerts(b)
		if err != nil {
			return nil, &FileError{"cafile", f.CAFile, err}
		}
		cas = append(cas, c...)
	}
	if f.CAPath != "" {
		ents, err := os.ReadDir(f.CAPath)
		if err != nil {
			return nil, &FileError{"capath", f.CAPath, err}
		}
		n := 0
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			p := filepath.Join(f.CAPath, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, &FileError{"capath", p, err}
			}
			c, err := parseCerts(b)
			if err != nil {
				return nil, &FileError{"capath", p, err}
			}
			cas = append(cas, c...)
			n++
		}
		if n == 0 {
			return nil, &FileError{"capath", f.CAPath, errors.New("no CA files in it")}
		}
	}
	switch {
	case len(cas) == 0 && f.RequireCertificate:
		return nil, &FileError{"require_certificate", "", errors.New("needs cafile or capath to verify client certificates against")}
	case len(cas) == 0 && f.CRLFile != "":
		return nil, &FileError{"crlfile", f.CRLFile, errors.New("needs cafile or capath: a CRL is checked against its CA")}
	case len(cas) == 0:
		return cfg, nil
	}
	cfg.ClientCAs = x509.NewCertPool()
	for _, c := range cas {
		cfg.ClientCAs.AddCert(c)
	}
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if f.RequireCertificate {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if f.CRLFile != "" {
		revoked, err := loadCRL(f.CRLFile, cas)
		if err != nil {
			return nil, &FileError{"crlfile", f.CRLFile, err}
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			for _, chain := range cs.VerifiedChains {
				// Every certificate of the chain but the root may be
				// revoked by its issuer.
				for _, c := range chain[:max(len(chain)-1, 1)] {
					if revoked[string(c.RawIssuer)+"\x00"+string(c.SerialNumber.Bytes())] {
						return fmt.Errorf("listener: certificate %q (serial %s) is revoked", c.Subject.CommonName, c.SerialNumber)
					}
				}
			}
			return nil
		}
	}
	return cfg, nil
}

// parseCerts returns the CERTIFICATE blocks of a PEM file; none is an error.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE in it")
	}
	return out, nil
}

// loadCRL reads the revocation lists in path (PEM blocks, or one DER list)
// and returns the revoked certificates as issuer+"\x00"+serial. Each list
// must be signed by one of cas.
func loadCRL(path string, cas []*x509.Certificate) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ders [][]byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "X509 CRL" {
			ders = append(ders, blk.Bytes)
		}
	}
	if len(ders) == 0 {
		ders = [][]byte{b}
	}
	revoked := map[string]bool{}
	for _, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, err
		}
		signed := false
		for _, ca := range cas {
			if string(ca.RawSubject) == string(crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return nil, fmt.Errorf("CRL of %q is not signed by a CA in cafile/capath", crl.Issuer.String())
		}
		for _, e := range crl.RevokedCertificateEntries {
			revoked[string(crl.RawIssuer)+"\x00"+string(e.SerialNumber.Bytes())] = true
		}
	}
	return revoked, nil
}

// ParseTLSVersion reads tls_version: mosquitto's tlsv1.2 or tlsv1.3 (a
// minimum here).
func ParseTLSVersion(s string) (uint16, error) {
	switch strings.ToLower(s) {
	case "tlsv1.2":
		return tls.VersionTLS12, nil
	case "tlsv1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("want tlsv1.2 or tlsv1.3, got %q", s)
}

// ParseCiphers reads ciphers: TLS 1.2 suites by their IANA names (as Go
// spells them, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), separated by ':'
// or ','. Insecure suites are refused.
func ParseCiphers(s string) ([]uint16, error) {
	known := map[string]uint16{}
	for _, cs := range tls.CipherSuites() {
		known[cs.Name] = cs.ID
	}
	insecure := map[string]bool{}
	for _, cs := range tls.InsecureCipherSuites() {
		insecure[cs.Name] = true
	}
	var out []uint16
	for _, name := range strings.FieldsFunc(s, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		iana := name
		if std, ok := openSSLCiphers[name]; ok {
			iana = std // a mosquitto.conf's OpenSSL name
		}
		id, ok := known[iana]
		switch {
		case ok:
			out = append(out, id)
			continue
		case insecure[iana] || insecureOpenSSL(name):
			return nil, fmt.Errorf("TLS 1.2 cipher suite %q is insecure (no forward secrecy, or a broken cipher): Go does not offer it", name)
		case strings.ContainsAny(name, "!+@") || name == strings.ToUpper(name) && !strings.Contains(name, "-") && !strings.Contains(name, "_"):
			return nil, fmt.Errorf("%q is an OpenSSL cipher string keyword, which keel does not expand: list the suites by name (such as ECDHE-RSA-AES128-GCM-SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", name)
		}
		return nil, fmt.Errorf("unknown TLS 1.2 cipher suite %q (want an OpenSSL name such as ECDHE-RSA-AES128-GCM-SHA256, or an IANA one such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("want one or more cipher suite names, got %q", s)
	}
	return out, nil
}

// openSSLCiphers maps the OpenSSL names of the TLS 1.2 suites Go offers
// (what a mosquitto.conf's ciphers line holds) to their IANA names;
// listener's tests hold it to `openssl ciphers -stdname`.
var openSSLCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

// insecureOpenSSL says whether name is the OpenSSL name of a suite Go
// leaves out as insecure: static RSA key exchange (AES128-SHA,
// AES256-GCM-SHA384, ...), 3DES, RC4, or CBC with SHA-256.
func insecureOpenSSL(name string) bool {
	switch {
	case strings.HasPrefix(name, "AES") || strings.HasPrefix(name, "DES-") || strings.Contains(name, "RC4") || strings.Contains(name, "3DES"):
		return true
	case strings.HasPrefix(name, "ECDHE-") && strings.HasSuffix(name, "-SHA256") && !strings.Contains(name, "GCM"):
		return true
	}
	return false
}
