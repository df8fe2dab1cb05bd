package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// registerDevices registers the simulated devices through the API (bound,
// named "camera {i}", token = sn), 8 requests at a time, as deploy/run.sh
// does with curl.
func registerDevices(ctx context.Context, api, token, prefix string, n int) error {
	cl := &http.Client{Timeout: 10 * time.Second}
	digits := 16 - len(prefix)
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		first  error
	)
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n || ctx.Err() != nil {
					return
				}
				sn := fmt.Sprintf("%s%0*d", prefix, digits, i)
				body, _ := json.Marshal(map[string]any{"token": sn, "bound": true, "name": fmt.Sprintf("camera %d", i)})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPut, api+"/v1/devices/"+sn, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := cl.Do(req)
				if err == nil {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						err = fmt.Errorf("PUT /v1/devices/%s: %s: %s", sn, resp.Status, strings.TrimSpace(string(b)))
					}
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("registering the simulated devices: %d of %d failed, the first: %w", f, n, first)
	}
	return nil
}
