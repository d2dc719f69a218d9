// Flow control: what one peer can make us read, queue and send.
//
// A want is not answered at once. It becomes a job, one per (scope,
// device), and jobs are served in slices, round robin, from a window of
// bytes in flight per session (SessionConfig.WindowBytes), the way raft's
// tracker/inflights.go bounds what a leader sends a follower
// (MaxInflightBytes "bounds the bandwidth-delay product"). A slice's bytes
// leave the window when the peer acknowledges its ops (any summary whose
// vector reaches the slice's last seq: the peer acknowledges a pulled
// frame as soon as it is applied) or after AckTicks without one (a lost
// ack, an op the peer refused). So:
//   - what one want makes us read from the ledger and queue is at most a
//     window, whatever its range: Ready's output per call is bounded;
//   - a peer that keeps the window full and never acknowledges gets one
//     window per AckTicks: it stalls only itself;
//   - repeating a want coalesces into the job already queued (no second
//     read of the history), and a want repeated while its job made no
//     progress (the peer asks again faster than it consumes) is a strike,
//     as is a want for a device no certificate backs; strikes decay one per
//     tick, and MaxStrikes of them close the session with CodeAbusive,
//     which the transport bans.
//
// Honest long exchanges (a catch-up, the fork repair of a long chain)
// proceed at one window per round trip, in bounded memory.

package mesh

import (
	"context"
	"errors"
	"slices"

	"storemesh/ledger"
)

// CodeAbusive closes a session whose peer asks for more than it consumes
// (wants repeated faster than their answers are acknowledged) or for
// devices no certificate backs. Bannable.
const CodeAbusive = "abusive"

// serveJob is a want being served: device's ops in scope in (cursor, end].
type serveJob struct {
	scope, device string
	cursor, end   uint64 // end 0: everything held
	moved         bool   // the job progressed since the last want merged into it
}

// inflight is one ops frame sent in answer to a want and not yet
// acknowledged.
type inflight struct {
	scope, device string
	seq           uint64 // the frame's last seq of device
	bytes         int
	tick          int
}

var errWindowFull = errors.New("mesh: window full")

// strike counts a misbehaviour and closes the session when there are too
// many.
func (s *Session) strike(reason string, n int) error {
	s.stats.Rejected[reason]++
	s.strikes += n
	if s.strikes > s.cfg.MaxStrikes {
		return s.fail(protoErr(CodeAbusive, "%s: %d strikes in a row", reason, s.strikes))
	}
	return nil
}

// certified reports whether a certificate backs the chain id device.
func (s *Session) certified(device string) bool {
	return len(s.l.Certificate(ledger.ChainOwner(device))) > 0
}

func (s *Session) onWant(ctx context.Context, m *wantMsg) error {
	if !s.shared(m.Scope) {
		s.stats.Rejected["scope_not_shared"]++
		return nil
	}
	if !s.certified(m.Device) {
		return s.strike("want_unknown_device", s.cfg.MaxStrikes/8+1)
	}
	if m.Through != 0 && m.Through <= m.After {
		s.stats.Rejected["want_empty"]++
		return nil
	}
	return s.queueWant(m.Scope, m.Device, m.After, m.Through, true)
}

// queueWant adds a job, or merges the range into the job queued for the
// same device: the cursor moves back to the earlier start (a pull asked
// again after a lost frame) and the end to the later one.
func (s *Session) queueWant(scope, device string, after, through uint64, fromPeer bool) error {
	i := slices.IndexFunc(s.jobs, func(j *serveJob) bool { return j.scope == scope && j.device == device })
	if i < 0 {
		s.jobs = append(s.jobs, &serveJob{scope: scope, device: device, cursor: after, end: through})
		return nil
	}
	j := s.jobs[i]
	if fromPeer && !j.moved && after >= j.cursor && (j.end == 0 || through != 0 && through <= j.end) {
		// Asked again for what is still queued, with nothing of it
		// consumed since: faster than it can possibly read.
		s.stats.WantsMerged++
		return s.strike("want_repeated", 1)
	}
	s.stats.WantsMerged++
	j.cursor = min(j.cursor, after)
	if j.end != 0 && (through == 0 || through > j.end) {
		j.end = through
	}
	j.moved = false
	return nil
}

// serve sends slices of queued jobs while the window has room.
func (s *Session) serve(ctx context.Context) error {
	for len(s.jobs) > 0 && s.inBytes < s.cfg.WindowBytes && s.err == nil {
		j := s.jobs[0]
		through := s.l.Seq(j.scope, j.device)
		if j.end != 0 {
			through = min(through, j.end)
		}
		through = min(through, j.cursor+s.cfg.MaxPull)
		if through <= j.cursor {
			s.jobs = s.jobs[1:] // done
			continue
		}
		start := j.cursor
		err := s.l.Range(ctx, j.scope, j.device, j.cursor, through, s.cfg.BatchBytes, func(batch []ledger.RawOp) error {
			if s.inBytes >= s.cfg.WindowBytes {
				// Resume at the first seq of the batch not sent: a fork's
				// branches at one seq may straddle two batches.
				if c := batch[0].Seq - 1; c > j.cursor {
					j.cursor = c
				}
				return errWindowFull
			}
			size := 0
			for _, r := range batch {
				size += len(r.Bytes)
			}
			s.sendOps(j.scope, batch, false)
			last := batch[len(batch)-1].Seq
			s.inflight = append(s.inflight, inflight{j.scope, j.device, last, size, s.tick})
			s.inBytes += size
			s.stats.ServedBytes += uint64(size)
			j.cursor = max(j.cursor, last-1) // last's other branches may follow
			j.moved = true
			return nil
		})
		switch {
		case errors.Is(err, errWindowFull):
			if j.cursor == start { // cannot happen with ops below BatchBytes; never spin
				j.cursor = start + 1
			}
			return nil
		case err != nil:
			return s.fail(err)
		}
		j.cursor, j.moved = through, true
		// Round robin: the next device's job goes next.
		s.jobs = append(s.jobs[1:], j)
	}
	return nil
}

// ackInflight releases the window's frames of scope the peer's vector
// (partial or full) shows it holds.
func (s *Session) ackInflight(scope string, vv map[string]uint64) {
	if len(s.inflight) == 0 {
		return
	}
	s.inflight = slices.DeleteFunc(s.inflight, func(f inflight) bool {
		if f.scope == scope && vv[f.device] >= f.seq {
			s.inBytes -= f.bytes
			return true
		}
		return false
	})
}

// expireInflight releases frames unacknowledged for AckTicks (a lost ack,
// ops the peer refused) and lets strikes decay: a peer that never acks
// gets a window per AckTicks.
func (s *Session) expireInflight() {
	if s.strikes > 0 {
		s.strikes--
	}
	s.inflight = slices.DeleteFunc(s.inflight, func(f inflight) bool {
		if s.tick-f.tick >= s.cfg.AckTicks {
			s.inBytes -= f.bytes
			s.stats.Rejected["ack_timeout"]++
			return true
		}
		return false
	})
}

// Window returns the bytes sent in answer to wants and not yet
// acknowledged, and the wants queued (jobs).
func (s *Session) Window() (bytes, wants int) { return s.inBytes, len(s.jobs) }
