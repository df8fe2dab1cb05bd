package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ivms/ams/pkg/mediahook"
)

// The dev stack's media server: the processors sign push URLs for
// rtmp://127.0.0.1:1935/live, and `ams media-hook` on devMediaHookAddr checks
// each publish.
const (
	devRTMPAddr      = "127.0.0.1:1935"
	devMediaHookAddr = "127.0.0.1:8090"
	devNginxModule   = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
)

// startDevNginx starts Debian's nginx with the RTMP module, when installed,
// on devRTMPAddr with its publishes checked by the media hook. It returns the
// line `ams-dev` prints about it and a stop function; it never fails the dev
// stack (streams are an extra).
func startDevNginx(dir, hookKey string, log *slog.Logger) (line string, stop func()) {
	stop = func() {}
	if _, err := exec.LookPath("nginx"); err != nil {
		return "not started: nginx is not installed (bash deploy/stack/tools.sh media installs it)", stop
	}
	if _, err := os.Stat(devNginxModule); err != nil {
		return "not started: nginx has no RTMP module (bash deploy/stack/tools.sh media installs libnginx-mod-rtmp)", stop
	}
	if c, err := net.DialTimeout("tcp", devRTMPAddr, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Sprintf("not started: %s is taken", devRTMPAddr), stop
	}
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o700); err != nil {
		return "not started: " + err.Error(), stop
	}
	conf := fmt.Sprintf(`load_module %s;
daemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 256; }
rtmp {
    server {
        listen %s;
        application live {
            live on;
            record off;
            on_publish http://%s%s?key=%s;
        }
    }
}
`, devNginxModule, ndir, ndir, devRTMPAddr, devMediaHookAddr, mediahook.PathNginxRTMP, hookKey)
	cfg := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return "not started: " + err.Error(), stop
	}
	cmd := exec.Command("nginx", "-p", ndir, "-e", filepath.Join(ndir, "error.log"), "-c", cfg)
	// Its own process group: a Ctrl-C in the terminal reaches ams-dev, which stops nginx itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "not started: " + err.Error(), stop
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	log.Info("dev nginx-rtmp started", "addr", devRTMPAddr, "log", filepath.Join(ndir, "error.log"))
	return fmt.Sprintf("rtmp://%s/live (nginx-rtmp; every publish checked by ams media-hook on %s)", devRTMPAddr, devMediaHookAddr), stop
}
