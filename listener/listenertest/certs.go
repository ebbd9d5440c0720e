// Package listenertest makes TLS material for tests: a CA, server and
// client certificates, CRLs, all generated in the test with crypto/x509
// (no key is ever checked in), written as PEM files in a test directory.
// MakeCA and MakeCert do the same outside a test (the benchmarks, the
// crash tester), returning errors.
package listenertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

var serial atomic.Int64

// CA is a certificate authority made for one test.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	File    string // CertPEM, written in the test's directory
	dir     string
	t       testing.TB // nil for a CA of MakeCA
}

// NewCA makes a CA named name, valid from an hour ago for a day, in the
// test's directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := MakeCA(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	ca.t = t
	return ca
}

// MakeCA makes a CA named name, valid from an hour ago for a day, and
// writes its certificate in dir.
func MakeCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Keel tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), dir: dir}
	if ca.File, err = ca.writeFile(name+".pem", ca.CertPEM); err != nil {
		return nil, err
	}
	return ca, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func (ca *CA) write(name string, b []byte) string {
	p, err := ca.writeFile(name, b)
	if err != nil {
		ca.t.Fatal(err)
	}
	return p
}

func (ca *CA) writeFile(name string, b []byte) (string, error) {
	p := filepath.Join(ca.dir, name)
	return p, os.WriteFile(p, b, 0o600)
}

// Cert is an issued certificate and its key, as PEM and as files.
type Cert struct {
	X509     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
	CertFile string
	KeyFile  string
}

// TLS is the certificate as a tls.Certificate.
func (c *Cert) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	tc, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// Options shape an issued certificate.
type Options struct {
	Subject   pkix.Name
	Server    bool // a server certificate for 127.0.0.1, ::1 and localhost; otherwise a client's
	NotBefore time.Time
	NotAfter  time.Time // zero: a day from now
}

// Issue makes a certificate signed by ca; name names its files.
func (ca *CA) Issue(name string, o Options) *Cert {
	ca.t.Helper()
	c, err := ca.MakeCert(name, o)
	if err != nil {
		ca.t.Fatal(err)
	}
	return c
}

// MakeCert makes a certificate signed by ca and writes it and its key in
// the CA's directory; name names the files.
func (ca *CA) MakeCert(name string, o Options) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      o.Subject,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if o.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Cert{X509: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", kder)}
	if c.CertFile, err = ca.writeFile(name+".pem", c.CertPEM); err != nil {
		return nil, err
	}
	if c.KeyFile, err = ca.writeFile(name+".key", c.KeyPEM); err != nil {
		return nil, err
	}
	return c, nil
}

// Server issues a server certificate for the loopback addresses.
func (ca *CA) Server(name string) *Cert {
	ca.t.Helper()
	return ca.Issue(name, Options{Subject: pkix.Name{CommonName: name}, Server: true})
}

// Client issues a client certificate with the common name cn.
func (ca *CA) Client(cn string) *Cert {
	ca.t.Helper()
	return ca.Issue(cn, Options{Subject: pkix.Name{CommonName: cn}})
}

// CRL writes a CRL revoking certs and returns its file.
func (ca *CA) CRL(name string, certs ...*Cert) string {
	ca.t.Helper()
	var entries []x509.RevocationListEntry
	for _, c := range certs {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.X509.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(serial.Add(1)),
		ThisUpdate:                time.Now().Add(-time.Hour),
		NextUpdate:                time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name, pemBlock("X509 CRL", der))
}

// Pool is a cert pool holding the CA, for clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Write writes b as name in the CA's directory and returns the path.
func (ca *CA) Write(name string, b []byte) string { return ca.write(name, b) }
