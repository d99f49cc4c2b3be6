package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"radbridge/dicom/scu"
	"radbridge/hl7/mllp"
)

// Hostile inputs, each within the size limits and repeated as
// fast as the daemon answers: BenchmarkHostile runs them as phases
// (hl7-order-groups, stow-empty-parts, dicom-element-bomb) and reports the
// daemon's peak RSS and the well-behaved peers' latency during each.
func init() {
	hostileAttacks = append(hostileAttacks,
		// An ORM of 15,000 ORC/OBR groups (0.6 MB): AR, again.
		attack{"hl7-order-groups", 2, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
			c, done, err := dialFromCtx(ctx, "127.0.0.6", a.mllp)
			if err != nil {
				pause(ctx, 100*time.Millisecond)
				return
			}
			defer done()
			rd := mllp.NewReader(c, 1<<20)
			for ctx.Err() == nil {
				if err := mllp.WriteMessage(c, orderGroupBomb()); err != nil {
					return
				}
				if _, err := rd.ReadMessage(); err != nil {
					return
				}
			}
		}},
		// A STOW-RS request of 2,000,000 empty parts (18 MB): 413, again.
		attack{"stow-empty-parts", 2, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a.http+"/dicomweb/studies", bytes.NewReader(emptyPartsBody()))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=B`)
			attackConns.Add(1)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				pause(ctx, 100*time.Millisecond)
				return
			}
			resp.Body.Close()
		}},
		// C-STOREs of a 520,000-element header (4.2 MB, under the 4 MiB
		// header limit): A700, again, on 4 associations.
		attack{"dicom-element-bomb", 4, func(ctx context.Context, a hostileTargets, r *rand.Rand) {
			const sc = "1.2.840.10008.5.1.4.1.1.7"
			c, err := scu.Dial(ctx, a.dicom, scu.Config{CallingAE: "BOMB", CalledAE: "RADBRIDGE",
				Contexts: []scu.Context{{AbstractSyntax: sc, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}}, Timeout: 30 * time.Second})
			if err != nil {
				pause(ctx, 100*time.Millisecond)
				return
			}
			attackConns.Add(1)
			defer c.Abort()
			for ctx.Err() == nil {
				if _, err := c.Store(ctx, sc, "1.2.826.0.1.3680043.10.1447.94.1", "1.2.840.10008.1.2", bytes.NewReader(elementBomb())); err == nil {
					return // stored: the cap is off
				} else if !strings.Contains(err.Error(), "A700") && !strings.Contains(err.Error(), "elements") {
					return
				}
			}
		}},
	)
}

var orderGroupBomb = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	b.WriteString("MSH|^~\\&|RIS|HOSP|RADBRIDGE|IMAGING|20260310083000||ORM^O01|BOMB-1|P|2.3\rPID|1||BOMB-P||DOE^JOHN\r")
	for i := 0; i < 15000; i++ {
		fmt.Fprintf(&b, "ORC|NW|P%d|F%d\rOBR|%d|P%d|F%d|71250^CT\r", i, i, i+1, i, i)
	}
	return b.Bytes()
})

var emptyPartsBody = sync.OnceValue(func() []byte {
	b := bytes.Repeat([]byte("\r\n--B\r\n\r\n"), 2000000)
	return append(b[2:], "\r\n--B--\r\n"...)
})

// elementBomb is an implicit VR little endian data set: the UIDs, then
// 520,000 empty private elements.
var elementBomb = sync.OnceValue(func() []byte {
	var b []byte
	el := func(group, element uint16, v string) {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, group)
		b = binary.LittleEndian.AppendUint16(b, element)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	const study = "1.2.826.0.1.3680043.10.1447.94"
	el(0x0008, 0x0016, "1.2.840.10008.5.1.4.1.1.7")
	el(0x0008, 0x0018, study+".1")
	el(0x0020, 0x000D, study)
	el(0x0020, 0x000E, study+".9")
	for i := 0; i < 520000; i++ {
		el(0x0011, uint16(0x1000+i%0xE000), "")
	}
	return b
})
