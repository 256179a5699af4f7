package main

// The write gate sits between clients and FerretDB and lets one write command through at
// a time.
//
// Why: FerretDB 1.24 runs findAndModify, update and delete as "query, filter in Go, then
// write by _id", outside one transaction. Two concurrent conditional updates of the same
// document can therefore both match and both win, where MongoDB guarantees exactly one.
// Flotilla's correctness rests on that guarantee (every state change is one conditional
// single-document update), so writes are serialized here. Reads pass concurrently; SQLite
// has a single writer anyway, so little throughput is lost. Production MongoDB needs none
// of this.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
)

const (
	opMsg          = 2013
	opCompressed   = 2012
	maxMessage     = 48 * 1024 * 1024 // MongoDB's maxMessageSizeBytes
	flagMoreToCome = 1 << 1
)

// writeCommands are the commands that modify documents. Anything that might write
// (including compressed messages, whose command we cannot see) takes the gate.
var writeCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findandmodify": true,
}

type writeGate struct {
	backend func() (net.Conn, error)
	mu      sync.Mutex
	logger  *slog.Logger
}

func (g *writeGate) serve(listener net.Listener) error {
	for {
		client, err := listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go g.handle(client)
	}
}

func (g *writeGate) handle(client net.Conn) {
	defer client.Close()
	server, err := g.backend()
	if err != nil {
		g.logger.Error("cannot reach FerretDB", "error", err)
		return
	}
	defer server.Close()
	for {
		request, err := readMessage(client)
		if err != nil {
			return // client went away
		}
		if err := g.exchange(request, client, server); err != nil {
			if !errors.Is(err, io.EOF) {
				g.logger.Warn("connection dropped", "error", err)
			}
			return
		}
	}
}

// exchange forwards one request and relays every reply it produces.
func (g *writeGate) exchange(request []byte, client, server net.Conn) error {
	if isWrite(request) {
		g.mu.Lock()
		defer g.mu.Unlock()
	}
	if _, err := server.Write(request); err != nil {
		return err
	}
	if opCode(request) == opMsg && msgFlags(request)&flagMoreToCome != 0 {
		return nil // fire-and-forget request: no reply comes
	}
	for {
		reply, err := readMessage(server)
		if err != nil {
			return err
		}
		if _, err := client.Write(reply); err != nil {
			return err
		}
		// An exhaust cursor streams replies flagged moreToCome until the last one.
		if opCode(reply) != opMsg || msgFlags(reply)&flagMoreToCome == 0 {
			return nil
		}
	}
}

func readMessage(conn net.Conn) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(conn, header[:]); err != nil {
		return nil, err
	}
	size := int(binary.LittleEndian.Uint32(header[:]))
	if size < 16 || size > maxMessage {
		return nil, fmt.Errorf("bad message length %d", size)
	}
	message := make([]byte, size)
	copy(message, header[:])
	if _, err := io.ReadFull(conn, message[4:]); err != nil {
		return nil, err
	}
	return message, nil
}

func opCode(message []byte) int32 { return int32(binary.LittleEndian.Uint32(message[12:16])) }

func msgFlags(message []byte) uint32 {
	if len(message) < 20 {
		return 0
	}
	return binary.LittleEndian.Uint32(message[16:20])
}

// isWrite reads the command name: the first key of an OP_MSG's body section (kind 0).
func isWrite(message []byte) bool {
	switch opCode(message) {
	case opCompressed:
		return true
	case opMsg:
	default:
		return false // legacy OP_QUERY: only handshakes use it
	}
	// header(16) flags(4) kind(1) then the body document: size(4) type(1) name(cstring)
	if len(message) < 27 || message[20] != 0 {
		return true
	}
	name := message[26:]
	end := 0
	for end < len(name) && name[end] != 0 {
		end++
	}
	return writeCommands[strings.ToLower(string(name[:end]))]
}
