// Command echo is an echo server and client over sdx: the smallest program
// that uses the switch. It needs root (XDP and AF_XDP on the interface)
// and Linux 5.9 or later.
//
// On two hosts (or namespaces) that share a link:
//
//	echo -netns red  -if eth0 -listen  198.18.0.2:7000
//	echo -netns blue -if eth0 -connect 198.18.0.2:7000 -msg hello
//
// The server accepts sdx and kernel TCP clients on the same port; the
// client uses sdx when the server answers and kernel TCP otherwise, and
// says which. With -testbed, echo builds two namespaces joined by a veth
// pair (198.18.0.1 and .2), runs both ends there and removes them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/sdx-project/sdx"
	"github.com/sdx-project/sdx/internal/testbed"
)

func main() {
	netns := flag.String("netns", "", "network namespace of the interface (default: this one)")
	ifname := flag.String("if", "", "interface to attach sdx to")
	listen := flag.String("listen", "", "serve echo on host:port")
	connect := flag.String("connect", "", "send -msg to the echo server at host:port")
	msg := flag.String("msg", "hello", "what the client sends")
	bed := flag.Bool("testbed", false, "run server and client on a veth testbed of their own")
	flag.Parse()
	log.SetFlags(0)

	if *bed {
		if err := runTestbed(*msg); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *ifname == "" || (*listen == "") == (*connect == "") {
		flag.Usage()
		os.Exit(2)
	}
	st, err := sdx.NewStack(sdx.Config{Netns: *netns, Interface: *ifname})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	if *listen != "" {
		ln, err := serve(st, *listen)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("echo: serving on %v; interrupt to stop", ln.Addr())
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		<-sig
		ln.Close()
		return
	}
	if err := client(st, *connect, *msg); err != nil {
		log.Fatal(err)
	}
}

// serve listens on addr and echoes every connection back to itself.
func serve(st *sdx.Stack, addr string) (net.Listener, error) {
	lc := sdx.ListenConfig{Stack: st}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close() // graceful: the client reads all, then io.EOF
				n, _ := io.Copy(c, c)
				log.Printf("echo: %v from %v: %d bytes", c.(*sdx.Conn).Path(), c.RemoteAddr(), n)
			}()
		}
	}()
	return ln, nil
}

// client sends msg, half-closes, and prints what comes back.
func client(st *sdx.Stack, addr, msg string) error {
	d := sdx.Dialer{Stack: st, Timeout: 5 * time.Second}
	start := time.Now()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	conn := c.(*sdx.Conn)
	fmt.Printf("connected to %v over %s in %v\n", c.RemoteAddr(), conn.Path(), time.Since(start).Round(time.Microsecond))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	if err := conn.CloseWrite(); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	fmt.Printf("echo: %q\n", reply)
	return nil
}

// runTestbed runs the server on host B of a fresh veth testbed and the
// client on host A, then removes the testbed.
func runTestbed(msg string) error {
	bed, err := testbed.Create(testbed.Options{})
	if err != nil {
		return err
	}
	defer bed.Close()
	fmt.Printf("testbed: %s (%v) <-> %s (%v)\n", bed.A.NS, bed.A.Addr, bed.B.NS, bed.B.Addr)
	sb, err := sdx.NewStack(sdx.Config{Netns: bed.B.NS, Interface: bed.B.If})
	if err != nil {
		return err
	}
	defer sb.Close()
	sa, err := sdx.NewStack(sdx.Config{Netns: bed.A.NS, Interface: bed.A.If})
	if err != nil {
		return err
	}
	defer sa.Close()
	ln, err := serve(sb, net.JoinHostPort(bed.B.Addr.String(), "7000"))
	if err != nil {
		return err
	}
	defer ln.Close()
	return client(sa, ln.Addr().String(), msg)
}
