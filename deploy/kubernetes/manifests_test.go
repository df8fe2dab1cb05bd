package manifests

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// flagTable is `ams config`, read from the binary: per role, each AMS_*
// variable and its default.
type flagTable map[string]map[string]string

// amsConfig builds ams and reads its configuration table.
func amsConfig(t *testing.T) flagTable {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ams")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ams").CombinedOutput(); err != nil {
		t.Fatalf("go build ams: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "config").Output()
	if err != nil {
		t.Fatalf("ams config: %v", err)
	}
	tab := flagTable{}
	row := regexp.MustCompile("^\\| ([a-z ]+) \\| `-([a-z0-9-]+)` \\| `(AMS_[A-Z0-9_]+)` \\| `([^`]*)` \\|")
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			if tab[m[1]] == nil {
				tab[m[1]] = map[string]string{}
			}
			tab[m[1]][m[3]] = m[4]
			if "AMS_"+strings.ToUpper(strings.ReplaceAll(m[2], "-", "_")) != m[3] {
				t.Errorf("ams config: flag -%s has variable %s", m[2], m[3])
			}
		}
	}
	if len(tab) < 7 {
		t.Fatalf("ams config: only roles %v", tab)
	}
	return tab
}

// objects renders a kustomization and decodes every object strictly into
// its k8s.io/api type (an unknown field fails).
func objects(t *testing.T, dir string) []any {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []any
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		var obj any
		switch r.GetKind() {
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "Job":
			obj = &batchv1.Job{}
		case "Service":
			obj = &corev1.Service{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Namespace":
			obj = &corev1.Namespace{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "HorizontalPodAutoscaler":
			obj = &autoscalingv2.HorizontalPodAutoscaler{}
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		default:
			t.Errorf("%s: %s %s: kind not checked by this test", dir, r.GetKind(), r.GetName())
			continue
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		out = append(out, obj)
	}
	return out
}

// workload is one role's pod template.
type workload struct {
	kind, name string
	replicas   int32
	pod        corev1.PodTemplateSpec
}

// dockerUser returns the numeric USER of the image definition.
func dockerUser(t *testing.T) (uid int64, entrypoint string) {
	t.Helper()
	b, err := os.ReadFile("../container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)\s*$`).FindStringSubmatch(string(b))
	if user == nil {
		t.Fatal("Dockerfile: no numeric USER uid:gid")
	}
	uid, _ = strconv.ParseInt(user[1], 10, 64)
	ep := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindStringSubmatch(string(b))
	if ep == nil {
		t.Fatal("Dockerfile: no exec-form ENTRYPOINT")
	}
	return uid, ep[1]
}

// TestContainerImage: the image definition is multi-stage, ends on
// distroless (whose :nonroot images define user 65532) or scratch, runs as
// a non-root numeric user, builds ./cmd/ams and starts the binary it copied.
func TestContainerImage(t *testing.T) {
	b, err := os.ReadFile("../container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(s, -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a multi-stage build", len(froms))
	}
	final := froms[len(froms)-1][1]
	uid, ep := dockerUser(t)
	switch {
	case final == "scratch":
	case strings.HasPrefix(final, "gcr.io/distroless/static") && strings.HasSuffix(final, ":nonroot"):
		if uid != 65532 {
			t.Errorf("Dockerfile: USER %d, but distroless's nonroot user is 65532", uid)
		}
	default:
		t.Errorf("Dockerfile: final stage %s, want distroless static :nonroot or scratch", final)
	}
	if uid == 0 {
		t.Error("Dockerfile: USER is root")
	}
	build := regexp.MustCompile(`go build .* -o (\S+) (\./cmd/ams)\b`).FindStringSubmatch(s)
	if build == nil {
		t.Fatal("Dockerfile: no `go build ... -o OUT ./cmd/ams`")
	}
	if _, err := os.Stat("../../cmd/ams/main.go"); err != nil {
		t.Errorf("Dockerfile builds ./cmd/ams: %v", err)
	}
	if !strings.Contains(s, "COPY --from=build "+build[1]+" "+ep) {
		t.Errorf("Dockerfile: ENTRYPOINT %s is not the binary built at %s", ep, build[1])
	}
	if !strings.Contains(s, "CGO_ENABLED=0") {
		t.Error("Dockerfile: the binary must be static (CGO_ENABLED=0) for a distroless/scratch image")
	}
}

func TestManifests(t *testing.T) {
	tab := amsConfig(t)
	uid, _ := dockerUser(t)
	for _, dir := range []string{"base", "overlays/production"} {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) { checkManifests(t, dir, tab, uid) })
	}
}

func checkManifests(t *testing.T, dir string, tab flagTable, uid int64) {
	objs := objects(t, dir)
	var (
		workloads []workload
		configMap = map[string]string{}
		hpas      []*autoscalingv2.HorizontalPodAutoscaler
		pdbs      []*policyv1.PodDisruptionBudget
		policies  = map[string]bool{}
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			workloads = append(workloads, workload{"Deployment", o.Name, ptr(o.Spec.Replicas), o.Spec.Template})
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{"StatefulSet", o.Name, ptr(o.Spec.Replicas), o.Spec.Template})
		case *batchv1.Job:
			workloads = append(workloads, workload{"Job", o.Name, 1, o.Spec.Template})
		case *corev1.ConfigMap:
			if o.Name == "ams-config" || strings.HasPrefix(o.Name, "ams-config-") {
				configMap = o.Data
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			hpas = append(hpas, o)
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		case *networkingv1.NetworkPolicy:
			policies[o.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]] = true
		}
	}
	partitions, err := strconv.Atoi(configMap["partitions"])
	if err != nil {
		t.Fatalf("ConfigMap ams-config: partitions %q", configMap["partitions"])
	}
	roles := map[string]workload{}
	for _, w := range workloads {
		spec := w.pod.Spec
		if len(spec.Containers) != 1 {
			t.Errorf("%s %s: %d containers, want 1", w.kind, w.name, len(spec.Containers))
			continue
		}
		c := spec.Containers[0]
		role := c.Args[0]
		if role == "sink" && len(c.Args) > 1 {
			role = "sink " + c.Args[1]
		}
		vars, ok := tab[role]
		if !ok {
			t.Errorf("%s %s: args %v: no role %q in `ams config`", w.kind, w.name, c.Args, role)
			continue
		}
		roles[role] = w
		where := fmt.Sprintf("%s %s (%s)", w.kind, w.name, role)
		for _, a := range c.Args[len(strings.Fields(role)):] {
			if f, ok := strings.CutPrefix(a, "-"); ok {
				f, _, _ = strings.Cut(f, "=")
				if _, ok := vars["AMS_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_"))]; !ok {
					t.Errorf("%s: flag %s is not in `ams config`", where, a)
				}
			}
		}
		// Environment: every AMS_* variable exists for this role; secrets come from files where a *-file flag exists.
		env := map[string]string{}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = true
		}
		for _, e := range c.Env {
			env[e.Name] = e.Value
			if !strings.HasPrefix(e.Name, "AMS_") {
				continue
			}
			if _, ok := vars[e.Name]; !ok {
				t.Errorf("%s: %s is not a variable of `ams %s` (drift: see `ams config`)", where, e.Name, role)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				if _, ok := vars[e.Name+"_FILE"]; ok {
					t.Errorf("%s: %s comes from a Secret as a variable, but `ams %s` has %s_FILE: mount the secret as a file", where, e.Name, role, e.Name)
				} else {
					t.Logf("%s: %s is a Secret in the environment (no %s_FILE flag yet)", where, e.Name, e.Name)
				}
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				if _, ok := configMap[e.ValueFrom.ConfigMapKeyRef.Key]; !ok {
					t.Errorf("%s: %s reads ConfigMap key %q, which ams-config lacks", where, e.Name, e.ValueFrom.ConfigMapKeyRef.Key)
				}
			}
			if strings.HasSuffix(e.Name, "_FILE") || strings.HasSuffix(e.Name, "_FILES") {
				for _, p := range strings.Split(e.Value, ",") {
					if p != "" && !mounts[filepath.Dir(p)] {
						t.Errorf("%s: %s=%s is not under a mounted volume", where, e.Name, p)
					}
				}
			}
			for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(e.Value, -1) {
				if _, ok := env[ref[1]]; !ok {
					t.Errorf("%s: %s uses $(%s), not defined before it", where, e.Name, ref[1])
				}
			}
		}
		// Security: non-root as the image's user, read-only root filesystem, nothing added.
		sc := c.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.RunAsUser == nil || *sc.RunAsUser != uid {
			t.Errorf("%s: securityContext must be non-root as uid %d (the Dockerfile's USER), read-only root fs, no privilege escalation", where, uid)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: needs CPU and memory requests and a memory limit", where)
		}
		if !policies[w.pod.Labels["app.kubernetes.io/component"]] {
			t.Errorf("%s: no NetworkPolicy selects component %q", where, w.pod.Labels["app.kubernetes.io/component"])
		}
		if w.kind == "Job" {
			continue
		}
		// Ports and probes: the listen address the role uses (its variable or the default).
		addrVar := "AMS_OPS_ADDR"
		if role == "api" {
			addrVar = "AMS_HTTP_ADDR"
		}
		addr, ok := env[addrVar]
		if !ok {
			addr = vars[addrVar]
		}
		_, portS, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("%s: %s %q: %v", where, addrVar, addr, err)
			continue
		}
		port, _ := strconv.Atoi(portS)
		named := map[string]int32{}
		found := false
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
			found = found || int(p.ContainerPort) == port
		}
		if !found {
			t.Errorf("%s: listens on %s (%s) but declares ports %v", where, addr, addrVar, c.Ports)
		}
		for name, pr := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name {
				t.Errorf("%s: needs an HTTP probe on %s", where, name)
				continue
			}
			pp := pr.HTTPGet.Port
			if got := pp.IntValue(); pp.Type == intstr.String {
				got = int(named[pp.StrVal])
				if got != port {
					t.Errorf("%s: probe %s on port %q (%d), the role listens on %d", where, name, pp.StrVal, got, port)
				}
			} else if got != port {
				t.Errorf("%s: probe %s on port %d, the role listens on %d", where, name, got, port)
			}
		}
		if role == "process" {
			if w.kind != "StatefulSet" && env["AMS_INSTANCE_ID"] == "" {
				t.Errorf("%s: the transactional processor needs a stable -instance-id (a StatefulSet's pod name)", where)
			}
			var fromPod bool
			for _, e := range c.Env {
				fromPod = fromPod || (e.Name == "AMS_INSTANCE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name")
			}
			if !fromPod {
				t.Errorf("%s: AMS_INSTANCE_ID must be the pod name (metadata.name)", where)
			}
			if int(w.replicas) > partitions {
				t.Errorf("%s: %d replicas, more than the %d partitions", where, w.replicas, partitions)
			}
		}
		if a := w.pod.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
			t.Errorf("%s: no pod anti-affinity", where)
		}
		var hasPDB bool
		for _, p := range pdbs {
			hasPDB = hasPDB || p.Spec.Selector.MatchLabels["app.kubernetes.io/component"] == w.pod.Labels["app.kubernetes.io/component"]
		}
		if !hasPDB {
			t.Errorf("%s: no PodDisruptionBudget", where)
		}
	}
	for _, want := range []string{"migrate", "ingest", "process", "egress", "sink clickhouse", "sink redis", "api"} {
		if _, ok := roles[want]; !ok {
			t.Errorf("%s: no workload runs `ams %s`", dir, want)
		}
	}
	if roles["migrate"].kind != "Job" {
		t.Errorf("%s: ams migrate must be a Job", dir)
	}
	// Autoscaling: only roles that scale by consumer group (or are stateless), never past the partition count, never the processor.
	for _, h := range hpas {
		var target *workload
		for i := range workloads {
			if workloads[i].name == h.Spec.ScaleTargetRef.Name && workloads[i].kind == h.Spec.ScaleTargetRef.Kind {
				target = &workloads[i]
			}
		}
		if target == nil {
			t.Errorf("%s: HPA %s targets %s %s, which does not exist", dir, h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			continue
		}
		if target.pod.Spec.Containers[0].Args[0] == "process" {
			t.Errorf("%s: HPA %s autoscales the processor: every scale moves partitions and restores state", dir, h.Name)
		}
		if int(h.Spec.MaxReplicas) > partitions {
			t.Errorf("%s: HPA %s: maxReplicas %d over the %d partitions", dir, h.Name, h.Spec.MaxReplicas, partitions)
		}
	}
}

func ptr(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
