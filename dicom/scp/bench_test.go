package scp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"radbridge/dicom/dimse"
	"radbridge/dicom/part10"
	"radbridge/internal/testkit"
)

// BenchmarkCStore stores 512 KiB instances over loopback with the
// in-process SCU, one association, pixel data discarded or written to disk.
func BenchmarkCStore(b *testing.B) {
	const pixels = 512 << 10
	for _, mode := range []string{"discard", "storedir"} {
		b.Run(mode, func(b *testing.B) {
			cfg := Config{}
			if mode == "storedir" {
				cfg.StoreDir = b.TempDir()
			}
			s := startSCP(b, cfg)
			c := dialSCU(b, s, "BENCH")
			body := make([]byte, pixels)
			b.SetBytes(pixels)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sop := "1.2.826.0.1.3680043.10.1447.700." + strconv.Itoa(i)
				data := append(pixelHeader(ctHeader(sop), pixels), body...)
				rsp, err := c.store(pcCTImpl, ctSOPClass, sop, bytes.NewReader(data))
				if err != nil || rsp.Status != dimse.StatusSuccess {
					b.Fatalf("store: %v %+v", err, rsp)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "instances/s")
			c.release(b)
		})
	}
}

// writeBenchFiles writes n Part-10 CT files of about size bytes each.
func writeBenchFiles(b *testing.B, n, size int) string {
	dir := b.TempDir()
	body := make([]byte, size)
	for i := 0; i < n; i++ {
		sop := fmt.Sprintf("1.2.826.0.1.3680043.10.1447.800.%d", i)
		data := part10.FileMeta(ctSOPClass, sop, "1.2.840.10008.1.2", "BENCH")
		data = append(data, pixelHeader(ctHeader(sop), uint32(size))...)
		data = append(data, body...)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d.dcm", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkStorescu sends 200 files of 470 KB with one storescu
// association, to our SCP (writing Part-10 files) and to DCMTK's storescp
// (+B bit preserving, kept on loopback with ../shared/tools/loopback_bind.c
// when available), and reports instances per second.
func BenchmarkStorescu(b *testing.B) {
	testkit.Peer(b, "storescu")
	const files = 200
	src := writeBenchFiles(b, files, 470<<10)
	b.Run("radbridge-discard", func(b *testing.B) {
		s := startSCP(b, Config{})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if out, err := run(b, "storescu", "-xi", "+sd", "-aec", "RADBRIDGE", s.host, s.port, src); err != nil {
				b.Fatalf("storescu: %v\n%s", err, out)
			}
		}
		b.ReportMetric(float64(files*b.N)/b.Elapsed().Seconds(), "instances/s")
	})
	b.Run("radbridge-storedir", func(b *testing.B) {
		s := startSCP(b, Config{StoreDir: b.TempDir()})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if out, err := run(b, "storescu", "-xi", "+sd", "-aec", "RADBRIDGE", s.host, s.port, src); err != nil {
				b.Fatalf("storescu: %v\n%s", err, out)
			}
		}
		b.ReportMetric(float64(files*b.N)/b.Elapsed().Seconds(), "instances/s")
	})
	b.Run("storescp", func(b *testing.B) {
		storescp := testkit.Peer(b, "storescp")
		shim := filepath.Join(repoRoot(b), "..", "shared", "tools", "loopback_bind.c")
		if _, err := os.Stat(shim); err != nil {
			b.Skip("loopback_bind.c not found; not binding storescp to all interfaces")
		}
		so := filepath.Join(b.TempDir(), "libloopback_bind.so")
		if out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", so, shim, "-ldl").CombinedOutput(); err != nil {
			b.Skipf("build shim: %v\n%s", err, out)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, storescp, "+B", "-aet", "RADBRIDGE", "-od", b.TempDir(), port)
		cmd.Env = append(os.Environ(), "TCP_NODELAY=1", "LD_PRELOAD="+so)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		if !testkit.Poll(2*time.Second, func() bool {
			c, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err == nil {
				c.Close()
			}
			return err == nil
		}) {
			b.Fatal("storescp did not start")
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if out, err := run(b, "storescu", "-xi", "+sd", "-aec", "RADBRIDGE", "127.0.0.1", port, src); err != nil {
				b.Fatalf("storescu: %v\n%s", err, out)
			}
		}
		b.ReportMetric(float64(files*b.N)/b.Elapsed().Seconds(), "instances/s")
	})
}
