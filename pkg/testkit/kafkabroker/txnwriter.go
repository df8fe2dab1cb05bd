package kafkabroker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TxnWriter writes records to a Broker the way a processor does: one
// transaction per tick, and a transaction that fails (the broker going
// away) is aborted and retried with the same records until it commits.
type TxnWriter struct {
	// Produced counts the records of committed transactions; Retries the
	// transactions that failed and were redone.
	Produced, Retries atomic.Int64
	wg                sync.WaitGroup
	lastCommit        time.Time
}

// WriteTxns starts a TxnWriter with transactional id txnID writing recs in
// order, per records a transaction, a transaction each tick, until every
// record is committed or ctx ends. A client it cannot build fails t.
func (k *Broker) WriteTxns(ctx context.Context, t testing.TB, txnID string, recs []*kgo.Record, per int, tick time.Duration) *TxnWriter {
	w := &TxnWriter{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.TransactionalID(txnID),
			kgo.RecordRetries(3), kgo.RequestTimeoutOverhead(2*time.Second))
		if err != nil {
			t.Errorf("writer: %v", err)
			return
		}
		defer cl.Close()
		for i := 0; i < len(recs) && ctx.Err() == nil; {
			batch := make([]*kgo.Record, 0, per)
			for _, r := range recs[i:min(i+per, len(recs))] {
				batch = append(batch, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value})
			}
			err := cl.BeginTransaction()
			if err == nil {
				err = cl.ProduceSync(ctx, batch...).FirstErr()
			}
			if eerr := cl.EndTransaction(ctx, kgo.TransactionEndTry(err == nil)); eerr != nil && err == nil {
				err = eerr
			}
			if err != nil {
				w.Retries.Add(1)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			i += len(batch)
			w.Produced.Store(int64(i))
			w.lastCommit = time.Now()
			time.Sleep(tick)
		}
	}()
	return w
}

// Wait waits for the writer to end and returns the time of its last commit.
func (w *TxnWriter) Wait() time.Time {
	w.wg.Wait()
	return w.lastCommit
}

// RestartAfter waits until the writer has committed n records (or ctx ends),
// then stops the broker, waits pause and starts it again. It returns when
// the broker was stopped and when it answered again.
func (k *Broker) RestartAfter(ctx context.Context, w *TxnWriter, n int64, pause time.Duration) (stopped, back time.Time) {
	for w.Produced.Load() < n && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	stopped = time.Now()
	k.Stop()
	time.Sleep(pause)
	k.Start()
	return stopped, time.Now()
}
