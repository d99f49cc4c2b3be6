package api

import "time"

// sendTask is a connection that a sender goroutine runs for: run sends
// what is ready and returns when there is nothing more (or the connection
// is over). The connection makes sure at most one run is in progress.
type sendTask interface{ run() }

// wsSenders hands a kicked subscriber to a goroutine that has just sent for
// another one and still waits, so a fan-out reuses goroutines instead of
// starting one per subscriber and event. A sender that waits
// wsSenderLinger without work ends: idle subscribers keep none.
var wsSenders = make(chan sendTask)

const wsSenderLinger = 500 * time.Millisecond

func startSender(s sendTask) {
	select {
	case wsSenders <- s:
	default:
		go sender(s)
	}
}

func sender(s sendTask) {
	t := time.NewTimer(wsSenderLinger)
	defer t.Stop()
	for {
		s.run()
		t.Reset(wsSenderLinger)
		select {
		case s = <-wsSenders:
		case <-t.C:
			return
		}
	}
}
