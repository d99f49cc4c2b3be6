package part10

import (
	"os"
	"syscall"
)

// writeBack starts writing n bytes at off of f to disk without waiting
// (sync_file_range SYNC_FILE_RANGE_WRITE). It is a hint: it makes nothing
// durable and its errors are left to the fsync that must follow.
func writeBack(f *os.File, off, n int64) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SyncFileRange(int(fd), off, n, 0x2 /* SYNC_FILE_RANGE_WRITE */)
		})
	}
}

// syncData makes f's data durable, and the metadata needed to read it
// (size, blocks), with fdatasync.
func syncData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
