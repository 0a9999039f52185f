package protocol

import (
	"encoding/binary"
	"io"
)

// ReadFrame reads one frame from r and returns its body. A header that
// announces more than FrameMax is refused (an *Error) before anything is
// read or allocated for the body. io.EOF: the stream ended between frames;
// io.ErrUnexpectedEOF: inside one.
//
// The body may hold a connection string: callers zero it (Zero) once
// decoded.
func ReadFrame(r io.Reader) ([]byte, error) {
	var h [FrameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > FrameMax {
		return nil, violation("frame of %d bytes announced, over the %d-byte limit", n, FrameMax)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		Zero(body)
		return nil, err
	}
	return body, nil
}

// Zero overwrites b: a frame's bytes may have held a connection string.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
