// Command hl7load is a small MLLP load generator for the HL7 receiver.
// It sends a bounded number of messages over several connections, one at
// a time per connection (send, wait for the ACK), and prints the rate and
// the ACK latency percentiles. Each message gets a unique MSH-10.
//
//	hl7load -addr 127.0.0.1:2575 -conns 4 -n 20000 -duration 30s
//	hl7load -addr 127.0.0.1:2575 -conns 8 -rate 1000 -n 20000   # paced: 1,000 msg/s offered in all
//	hl7load -serve-ackonly 127.0.0.1:2576   # baseline: constant ACK, no parsing
//	hl7load -serve-noop 127.0.0.1:2577      # radbridge's receiver, handler that stores nothing
//	hl7load -fsync-dir /data/tmp -n 5000    # the disk's raw write+fsync rate (baseline for durable ingest)
//
// Servers stop after -duration. Use only loopback addresses.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"radbridge/hl7"
	"radbridge/hl7/mllp"
	"radbridge/hl7/receiver"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2575", "receiver address")
	conns := flag.Int("conns", 1, "concurrent connections")
	n := flag.Int("n", 10000, "messages to send in total")
	dur := flag.Duration("duration", 60*time.Second, "time cap (also for the server modes)")
	file := flag.String("file", "", "HL7 message to send (default: a built-in ORU^R01); its MSH-10 is replaced")
	ackOnly := flag.String("serve-ackonly", "", "serve a constant ACK on this address instead of sending")
	noop := flag.String("serve-noop", "", "serve radbridge's receiver with a no-op handler on this address instead of sending")
	rate := flag.Float64("rate", 0, "messages/s offered over all connections (0: each connection sends its next message as soon as it has the ACK)")
	fsyncDir := flag.String("fsync-dir", "", "measure the raw write+fsync rate of -n appends of 0.4 KB to a file in this directory instead of sending")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var err error
	switch {
	case *ackOnly != "":
		err = serveAckOnly(ctx, *ackOnly)
	case *noop != "":
		err = serveNoop(ctx, *noop)
	case *fsyncDir != "":
		err = rawFsync(ctx, *fsyncDir, *n)
	default:
		err = run(ctx, *addr, *conns, *n, *file, *rate)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hl7load:", err)
		os.Exit(1)
	}
}

const builtinORU = "MSH|^~\\&|LOADGEN|TEST|RADBRIDGE|IMAGING|20250101120000||ORU^R01^ORU_R01|CTRL|P|2.5.1\r" +
	"PID|1||LOAD0001^^^TEST^MR||LOAD^TEST^^^^^L||19700101|U\r" +
	"ORC|RE|PLC1|FIL1||CM\r" +
	"OBR|1|PLC1|FIL1|CTCHEST^CT CHEST^L|||20250101110000|||||||||||ACC1||||||CT|F\r" +
	"OBX|1|TX|RPT^Report^L||Synthetic load-test report line one.||||||F\r" +
	"OBX|2|TX|RPT^Report^L||IMPRESSION: nothing, this is a load test.||||||F\r"

// template splits a message around its MSH-10.
func template(file string) (before, after []byte, err error) {
	msg := []byte(builtinORU)
	if file != "" {
		if msg, err = os.ReadFile(file); err != nil {
			return nil, nil, err
		}
	}
	m, err := hl7.Parse(msg)
	if err != nil && m == nil {
		return nil, nil, fmt.Errorf("parse %s: %w", file, err)
	}
	msg = m.Bytes()
	f := m.Delimiters().Field
	// MSH-10 follows the 9th field separator of the first segment.
	pos := 0
	for i := 0; i < 9; i++ {
		j := bytes.IndexByte(msg[pos:], f)
		if j < 0 {
			return nil, nil, errors.New("message has no MSH-10")
		}
		pos += j + 1
	}
	end := pos + bytes.IndexAny(msg[pos:], string(f)+"\r")
	return msg[:pos], msg[end:], nil
}

// run sends n messages over conns connections, one in flight on each. With
// rate > 0 message i is due at i/rate seconds from the start, and its ACK
// latency counts from then, not from when a connection got to send it: a
// receiver that falls behind the offered rate shows the backlog in the
// latency instead of slowing the sender down (no coordinated omission).
func run(ctx context.Context, addr string, conns, n int, file string, rate float64) error {
	before, after, err := template(file)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	begin := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
			defer stop()
			r := mllp.NewReader(c, 1<<20)
			var my []time.Duration
			myCodes := map[string]int{}
			defer func() {
				mu.Lock()
				lat = append(lat, my...)
				for k, v := range myCodes {
					codes[k] += v
				}
				mu.Unlock()
			}()
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				msg := append(append(append([]byte{}, before...), "L"+runID+"-"+strconv.FormatInt(i, 10)...), after...)
				t0 := time.Now()
				if rate > 0 {
					t0 = begin.Add(time.Duration(float64(i-1) / rate * float64(time.Second)))
					if d := time.Until(t0); d > 0 {
						select {
						case <-time.After(d): // pacing the offered load
						case <-ctx.Done():
							return
						}
					}
				}
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if err := mllp.WriteMessage(c, msg); err != nil {
					errs <- err
					return
				}
				ack, err := r.ReadMessage()
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				my = append(my, time.Since(t0))
				code := "?"
				if am, _ := hl7.Parse(ack); am != nil {
					code = am.Get("MSA-1")
				}
				myCodes[code]++
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "connection error:", err)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	if rate > 0 {
		fmt.Printf("offered %.0f msgs/s over %d connections, paced; latency from each message's due time\n", rate, conns)
	}
	fmt.Printf("sent %d messages over %d connections in %v: %.0f msgs/s\n", len(lat), conns, elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds())
	fmt.Printf("ACK latency p50 %v p99 %v max %v\n", pct(0.50), pct(0.99), pct(1))
	fmt.Printf("ACK codes %v\n", codes)
	if len(lat) == 0 {
		return errors.New("no message acknowledged")
	}
	return nil
}

// serveAckOnly answers every frame with the same AA, without parsing.
func serveAckOnly(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	ack := []byte("MSH|^~\\&|ACKONLY||||20250101||ACK^R01^ACK|1|P|2.5.1\rMSA|AA|\r")
	fmt.Println("serving constant ACKs on", ln.Addr())
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
			defer stop()
			r := mllp.NewReader(c, 1<<20)
			for {
				c.SetReadDeadline(time.Now().Add(5 * time.Minute))
				if _, err := r.ReadMessage(); err != nil {
					if !errors.Is(err, io.EOF) && ctx.Err() == nil {
						fmt.Fprintln(os.Stderr, "read:", err)
					}
					return
				}
				c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if err := mllp.WriteMessage(c, ack); err != nil {
					return
				}
			}
		}()
	}
}

// serveNoop runs the real receiver with a handler that stores nothing.
func serveNoop(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv, err := receiver.New(receiver.Config{
		Handler: receiver.HandlerFunc(func(context.Context, *hl7.Message, []byte) error { return nil }),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	fmt.Println("serving the receiver (no-op handler) on", ln.Addr())
	err = srv.Serve(ctx, ln)
	st := srv.Stats()
	fmt.Printf("messages %d acks %v discarded %d connections %d\n", st.Messages, st.Acks, st.DiscardedBytes, st.Connections)
	return err
}

// rawFsync appends n records of 0.4 KB (an HL7 message's size) to a new
// file in dir, each followed by fsync, and prints the rate: the floor of a
// durable append on that disk, one record per fsync.
func rawFsync(ctx context.Context, dir string, n int) error {
	f, err := os.CreateTemp(dir, "rawfsync-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rec := bytes.Repeat([]byte("x"), 400)
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		t := time.Now()
		if _, err := f.Write(rec); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	el := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("raw write+fsync: %d appends in %v: %.0f fsyncs/s / latency p50 %v p99 %v\n", len(lat), el.Round(time.Millisecond), float64(len(lat))/el.Seconds(), pct(0.50), pct(0.99))
	return nil
}
