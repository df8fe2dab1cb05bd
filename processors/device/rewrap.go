package device

import (
	"fmt"
	"time"
)

// KEK rotation, the re-wrap pass. A state restored from a changelog value
// whose session or handshake reply opened only with one of
// Config.PreviousKEKs is marked staleSeal. Its Deadline is then resealDue
// (long past), so the keyed runtime fires its Timer at the first tick after
// the restore, and Timer re-seals both fields under the current KEK before
// anything else: the new state goes to the changelog in the processor's own
// transaction, in order with every other change of the device, so a
// re-wrapped record can never overwrite newer state (it is the newest).
// Stale reports the marked states: the runtime exports how many each
// partition still holds (ams_keyed_state_stale_keys), and the previous KEK
// may be dropped once that is 0 on every partition (docs/OPERATIONS.md).

// resealDue is the deadline of a state waiting to be re-sealed.
var resealDue = time.Unix(0, 0).UTC()

// Stale reports whether s is still sealed under a previous KEK (see
// keyed.StaleState).
func (p *Processor) Stale(s *State) bool { return s != nil && s.staleSeal }

// reseal returns a copy of s with its session and handshake reply sealed
// under the current KEK.
func (c *call) reseal(s *State) (*State, error) {
	n := c.change(s)
	n.staleSeal = false
	if s.session != nil {
		plain := make([]byte, 0, sessionPlainLen)
		plain = append(append(plain, s.session.Key[:]...), s.session.IV[:]...)
		sealed, err := c.p.seal(c.sn, purposeSession, plain)
		clear(plain)
		if err != nil {
			return nil, fmt.Errorf("device: re-seal the session of %q: %w", c.sn, err)
		}
		n.sealedSession = sealed
	}
	if s.sealedReply != nil {
		pt, err := c.p.open(c.sn, purposeReply, s.sealedReply)
		if err != nil {
			return nil, fmt.Errorf("device: re-seal the handshake reply of %q: %w", c.sn, err)
		}
		sealed, err := c.p.seal(c.sn, purposeReply, pt)
		if err != nil {
			return nil, fmt.Errorf("device: re-seal the handshake reply of %q: %w", c.sn, err)
		}
		n.sealedReply = sealed
	}
	return n, nil
}
