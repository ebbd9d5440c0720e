package listener

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

type echo struct{}

func (echo) ServeConn(c net.Conn, _ Info) { io.Copy(c, c) }

type panicky struct{}

func (panicky) ServeConn(net.Conn, Info) { panic("boom") }

func TestServeHandsConnectionsAndShutsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: echo{}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("got %q, %v; want the handler's echo %q", buf, err, "ping")
	}

	// The echo handler never returns on its own: Shutdown gives up at the
	// deadline, closes it, and Serve returns ErrServerClosed.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: got %v, want %v", err, context.DeadlineExceeded)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: got %v, want %v", err, ErrServerClosed)
	}
	if _, err := io.ReadFull(c, buf); err == nil {
		t.Fatal("connection still open after Shutdown")
	}
}

func TestHandlerPanicClosesOnlyItsConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: panicky{}}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	for i := 0; i < 2; i++ { // the server keeps accepting after a panic
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("dial %d: read succeeded, want the connection closed", i)
		}
		c.Close()
	}
}

// wrapListener hands out its connections wrapped, as a TLS, WebSocket or
// metering layer does. The wrapper still has SyscallConn (promoted from
// the embedded *net.TCPConn): only the listener's grant says whether the
// socket may be written around it.
type wrapListener struct{ net.Listener }

type wrapped struct{ *net.TCPConn }

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrapped{c.(*net.TCPConn)}, nil
}

// Direct writes are granted to a plain TCP connection only; Info carries
// the listener's name and the client's address.
func TestInfoGrantsDirectWritesToPlainTCPOnly(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if wrap {
			ln = wrapListener{ln}
		}
		got := make(chan Info, 1)
		s := &Server{Name: "plain", Handler: HandlerFunc(func(nc net.Conn, info Info) { got <- info })}
		go s.Serve(ln)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		info := <-got
		if info.Listener != "plain" || info.Remote.String() != c.LocalAddr().String() {
			t.Fatalf("wrapped=%v: got listener %q remote %v, want %q %v", wrap, info.Listener, info.Remote, "plain", c.LocalAddr())
		}
		if (info.Direct != nil) == wrap {
			t.Fatalf("wrapped=%v: Direct granted = %v, want %v", wrap, info.Direct != nil, !wrap)
		}
		c.Close()
		s.Shutdown(context.Background())
	}
}
