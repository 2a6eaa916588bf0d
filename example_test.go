package sdx_test

import (
	"context"
	"fmt"
	"io"
	"log"

	"github.com/sdx-project/sdx"
)

// An echo server and its client. The two stacks stand for two hosts: here
// two network namespaces, "blue" and "red", joined by a veth pair with
// 198.18.0.1 on blue's "eth0" and 198.18.0.2 on red's (it needs root;
// examples/echo builds such a pair itself).
func Example() {
	server, err := sdx.NewStack(sdx.Config{Netns: "red", Interface: "eth0"})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	client, err := sdx.NewStack(sdx.Config{Netns: "blue", Interface: "eth0"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// The server: sdx and kernel TCP clients on the same port.
	lc := sdx.ListenConfig{Stack: server}
	ln, err := lc.Listen(context.Background(), "tcp", "198.18.0.2:7000")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close() // graceful: the client reads every byte, then io.EOF
				io.Copy(c, c)
			}()
		}
	}()

	// The client: sdx if the server answers, kernel TCP otherwise.
	d := sdx.Dialer{Stack: client}
	c, err := d.Dial("tcp", "198.18.0.2:7000")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, "hello over", c.(*sdx.Conn).Path())
	c.(*sdx.Conn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(reply))
}
