package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/uploadgw"
)

// simUploader makes the simulated cameras upload a picture through the
// upload gateway named in each 703 reply they get, as the firmware does.
// Uploads run on a few workers; a reply that finds them all busy is counted
// as skipped, never queued without bound.
type simUploader struct {
	log    *slog.Logger
	client *http.Client
	jobs   chan simUploadJob
	wg     sync.WaitGroup
	mu     sync.RWMutex // held for reading while sending to jobs; close takes it for writing
	closed bool
	seq    atomic.Int64

	ok, refused, failed, skipped atomic.Int64
}

type simUploadJob struct {
	sn    string
	grant uploadgw.Grant
}

func newSimUploader(log *slog.Logger, workers int) *simUploader {
	u := &simUploader{log: log, client: &http.Client{Timeout: 30 * time.Second}, jobs: make(chan simUploadJob, workers)}
	for range workers {
		u.wg.Add(1)
		go u.work()
	}
	return u
}

// onReceive is the fleet's OnReceive hook.
func (u *simUploader) onReceive(rc devicesim.Received) {
	if rc.Failure != "" || rc.Frame.CmdType != protocol.CmdAms || rc.Frame.AmsCmdType != protocol.AmsUploadParams {
		return
	}
	g, err := uploadgw.GrantFromReply(rc.Body)
	if err != nil {
		u.failed.Add(1)
		u.log.Warn("simulated upload: unusable 703 reply", "sn", rc.SN, "err", err)
		return
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.closed {
		return
	}
	select {
	case u.jobs <- simUploadJob{sn: rc.SN, grant: g}:
	default:
		u.skipped.Add(1)
	}
}

func (u *simUploader) work() {
	defer u.wg.Done()
	for j := range u.jobs {
		n := u.seq.Add(1)
		name := fmt.Sprintf("%d-%d.jpg", time.Now().UnixMilli(), n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code, body, err := uploadgw.Put(ctx, u.client, j.grant, name, "image/jpeg", uploadgw.TestJPEG(64, 48, int(n)))
		cancel()
		switch {
		case err != nil:
			u.failed.Add(1)
			u.log.Warn("simulated upload failed", "sn", j.sn, "err", err)
		case code/100 == 2:
			u.ok.Add(1)
		default:
			u.refused.Add(1)
			u.log.Warn("simulated upload refused", "sn", j.sn, "status", code, "body", body)
		}
	}
}

// close waits for the uploads under way and logs the counts.
func (u *simUploader) close() {
	u.mu.Lock()
	u.closed = true
	close(u.jobs)
	u.mu.Unlock()
	u.wg.Wait()
	u.log.Info("simulated uploads", "stored", u.ok.Load(), "refused", u.refused.Load(), "failed", u.failed.Load(), "skipped", u.skipped.Load())
}
