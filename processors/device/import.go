package device

import (
	"crypto/rand"
	"errors"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// ImportedSessionState returns the changelog value (ams.state.devices, key
// sn) of a device state holding only session k, sealed under kek as a
// handshake at time at would have sealed it. It is how a session carried
// over from the old service (pkg/sessionimport) reaches the processors: a
// processor restoring the partition gets the session and answers the
// device's next frame without a new handshake. Presence, registration and
// commands are empty; they come from the inputs as for any device.
func ImportedSessionState(reg *schemas.Registry, kek [32]byte, sn string, k protocol.SessionKey, at time.Time) ([]byte, error) {
	if reg == nil {
		return nil, errors.New("device: no schema registry")
	}
	if !protocol.ValidSN(sn) {
		return nil, errors.New("device: import: invalid sn")
	}
	if k.IsZero() {
		return nil, errors.New("device: import: all-zero session key")
	}
	aeads, err := newAEADs(kek, nil)
	if err != nil {
		return nil, err
	}
	p := &Processor{reg: reg, aeads: aeads, rand: rand.Reader}
	plain := make([]byte, 0, sessionPlainLen)
	plain = append(append(plain, k.Key[:]...), k.IV[:]...)
	sealed, err := p.seal(sn, purposeSession, plain)
	clear(plain)
	if err != nil {
		return nil, err
	}
	return p.EncodeState(sn, &State{session: &k, sealedSession: sealed, sessionAt: at, updatedAt: at})
}
