package manifests

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ivms/ams/pkg/namespace"
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

// listenTable is, per role, the AMS_* variables of the addresses it listens
// on (the flags whose meaning starts "listen address").
type listenTable map[string][]string

// amsConfig builds ams and reads its configuration table.
func amsConfig(t *testing.T) (flagTable, listenTable) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ams")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ams").CombinedOutput(); err != nil {
		t.Fatalf("go build ams: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "config").Output()
	if err != nil {
		t.Fatalf("ams config: %v", err)
	}
	tab, listen := flagTable{}, listenTable{}
	row := regexp.MustCompile("^\\| ([a-z -]+) \\| `-([a-z0-9-]+)` \\| `(AMS_[A-Z0-9_]+)` \\| `([^`]*)` \\| (.*) \\|$")
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			if tab[m[1]] == nil {
				tab[m[1]] = map[string]string{}
			}
			tab[m[1]][m[3]] = m[4]
			if strings.HasPrefix(m[5], "listen address") {
				listen[m[1]] = append(listen[m[1]], m[3])
			}
			if "AMS_"+strings.ToUpper(strings.ReplaceAll(m[2], "-", "_")) != m[3] {
				t.Errorf("ams config: flag -%s has variable %s", m[2], m[3])
			}
		}
	}
	if len(tab) < 7 {
		t.Fatalf("ams config: only roles %v", tab)
	}
	if len(listen["api"]) < 2 {
		t.Fatalf("ams config: api listens on %v, want -http-addr and -ops-addr", listen["api"])
	}
	return tab, listen
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
	tab, listen := amsConfig(t)
	uid, _ := dockerUser(t)
	for _, dir := range []string{"base", "overlays/production"} {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) { checkManifests(t, dir, tab, listen, uid) })
	}
}

// secretVar names the variables that carry a secret itself: none may be set
// in a manifest, neither as a literal nor from a Secret (the environment is
// readable in /proc and through the API); the secret comes as a file through
// the *_FILE variant.
var secretVar = regexp.MustCompile(`_(PASSWORD|TOKENS?|SECRET|SECRET_KEY)$|^AMS_KEK$|^AMS_SERVICE_ACCOUNTS$`)

// namespaced are the variables -namespace derives: set explicitly, they would
// win over it and split the stack.
var namespaced = []string{"AMS_TOPIC_PREFIX", "AMS_PROCESS_GROUP", "AMS_EGRESS_GROUP", "AMS_SINK_GROUP",
	"AMS_TRANSACTIONAL_ID_PREFIX", "AMS_MQTT_SHARE_GROUP", "AMS_MQTT_CLIENT_ID", "AMS_EGRESS_ID",
	"AMS_REDIS_PREFIX", "AMS_CLICKHOUSE_DATABASE"}

// dialPorts returns the TCP ports an address variable's value dials.
func dialPorts(name, value string) ([]int, error) {
	var ports []int
	for _, a := range strings.Split(value, ",") {
		if a == "" {
			continue
		}
		if name == "AMS_MQTT_URL" {
			u, err := url.Parse(a)
			if err != nil {
				return nil, err
			}
			a = u.Host
		}
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		ports = append(ports, n)
	}
	return ports, nil
}

// admits reports whether the rule's ports include port (no ports: all).
func admits(ports []networkingv1.NetworkPolicyPort, port int) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Port != nil && p.Port.IntValue() == port && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
			return true
		}
	}
	return false
}

func checkManifests(t *testing.T, dir string, tab flagTable, listen listenTable, uid int64) {
	objs := objects(t, dir)
	var (
		workloads []workload
		configMap = map[string]string{}
		hpas      []*autoscalingv2.HorizontalPodAutoscaler
		pdbs      []*policyv1.PodDisruptionBudget
		policies  = map[string][]*networkingv1.NetworkPolicy{}
		services  []*corev1.Service
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
			c := o.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]
			policies[c] = append(policies[c], o)
		case *corev1.Service:
			services = append(services, o)
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
				v := "AMS_" + strings.ToUpper(strings.ReplaceAll(f, "-", "_"))
				if _, ok := vars[v]; !ok {
					t.Errorf("%s: flag %s is not in `ams config`", where, a)
				}
				if secretVar.MatchString(v) {
					t.Errorf("%s: flag %s puts a secret on the command line: use -%s-file", where, a, f)
				}
			}
		}
		// Environment: every AMS_* variable exists for this role; secrets come only as files.
		env := map[string]string{} // resolved values (literals and ConfigMap keys)
		mounts := map[string]corev1.Volume{}
		volumes := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = v
			if v.Secret != nil && len(v.Secret.Items) == 0 {
				t.Errorf("%s: volume %s mounts the whole Secret %s: list the keys this role needs (items)", where, v.Name, v.Secret.SecretName)
			}
		}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = volumes[m.Name]
		}
		usedItems := map[string]bool{} // volume/key
		for _, e := range c.Env {
			env[e.Name] = e.Value
			if !strings.HasPrefix(e.Name, "AMS_") {
				continue
			}
			if _, ok := vars[e.Name]; !ok {
				t.Errorf("%s: %s is not a variable of `ams %s` (drift: see `ams config`)", where, e.Name, role)
			}
			if secretVar.MatchString(e.Name) {
				t.Errorf("%s: %s sets a secret in the environment: mount it and use %s_FILE", where, e.Name, e.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				if _, ok := vars[e.Name+"_FILE"]; ok {
					t.Errorf("%s: %s comes from a Secret as a variable, but `ams %s` has %s_FILE: mount the secret as a file", where, e.Name, role, e.Name)
				} else {
					t.Logf("%s: %s is a Secret in the environment (no %s_FILE flag yet)", where, e.Name, e.Name)
				}
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				v, ok := configMap[e.ValueFrom.ConfigMapKeyRef.Key]
				if !ok {
					t.Errorf("%s: %s reads ConfigMap key %q, which ams-config lacks", where, e.Name, e.ValueFrom.ConfigMapKeyRef.Key)
				}
				env[e.Name] = v
			}
			if strings.HasSuffix(e.Name, "_FILE") || strings.HasSuffix(e.Name, "_FILES") {
				for _, p := range strings.Split(e.Value, ",") {
					if p == "" {
						continue
					}
					vol, ok := mounts[filepath.Dir(p)]
					switch {
					case !ok:
						t.Errorf("%s: %s=%s is not under a mounted volume", where, e.Name, p)
					case vol.Secret != nil:
						found := false
						for _, it := range vol.Secret.Items {
							found = found || it.Path == filepath.Base(p)
						}
						if !found {
							t.Errorf("%s: %s=%s: volume %s projects no such key of Secret %s", where, e.Name, p, vol.Name, vol.Secret.SecretName)
						}
						usedItems[vol.Name+"/"+filepath.Base(p)] = true
					}
				}
			}
			for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(e.Value, -1) {
				if _, ok := env[ref[1]]; !ok {
					t.Errorf("%s: %s uses $(%s), not defined before it", where, e.Name, ref[1])
				}
			}
		}
		// Least privilege: every secret file mounted is one the role is given by a *_FILE variable.
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if !usedItems[v.Name+"/"+it.Path] {
					t.Errorf("%s: mounts %s of Secret %s, which no *_FILE variable names", where, it.Key, v.Secret.SecretName)
				}
			}
		}
		// Kafka: TLS and SCRAM on every role that talks to Kafka (a plaintext client can write ams.registry).
		if _, ok := vars["AMS_KAFKA_BROKERS"]; ok {
			if env["AMS_KAFKA_TLS_CA_FILE"] == "" && env["AMS_KAFKA_TLS"] != "true" {
				t.Errorf("%s: Kafka without TLS (set AMS_KAFKA_TLS_CA_FILE from a Secret)", where)
			}
			if !strings.HasPrefix(env["AMS_KAFKA_SASL_MECHANISM"], "SCRAM-SHA-") || env["AMS_KAFKA_SASL_USERNAME"] == "" || env["AMS_KAFKA_SASL_PASSWORD_FILE"] == "" {
				t.Errorf("%s: Kafka without SCRAM (AMS_KAFKA_SASL_MECHANISM %q, a user and AMS_KAFKA_SASL_PASSWORD_FILE)", where, env["AMS_KAFKA_SASL_MECHANISM"])
			}
		}
		// Namespace: set once, in ams-config; nothing it derives is set beside it.
		if _, ok := vars["AMS_NAMESPACE"]; ok {
			var fromConfig bool
			for _, e := range c.Env {
				fromConfig = fromConfig || (e.Name == "AMS_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Key == "namespace")
			}
			if !fromConfig {
				t.Errorf("%s: AMS_NAMESPACE must come from ams-config's key namespace (one namespace per stack)", where)
			}
			for _, n := range namespaced {
				if _, ok := env[n]; ok {
					t.Errorf("%s: %s is set, and would win over -namespace: let the namespace derive it", where, n)
				}
			}
		} else if def, ok := vars["AMS_REDIS_PREFIX"]; ok {
			ns := configMap["namespace"]
			if err := namespace.Validate(ns); err != nil {
				t.Errorf("ConfigMap ams-config: %v", err)
			} else if got, ok := env["AMS_REDIS_PREFIX"]; !ok && def != namespace.Derive(ns).RedisPrefix || ok && got != namespace.Derive(ns).RedisPrefix {
				t.Errorf("%s: `ams %s` has no -namespace: its AMS_REDIS_PREFIX must be %q, the prefix of namespace %q", where, role, namespace.Derive(ns).RedisPrefix, ns)
			}
		}
		// Egress: every address the role dials is admitted by its NetworkPolicy.
		comp := w.pod.Labels["app.kubernetes.io/component"]
		if len(policies[comp]) == 0 {
			t.Errorf("%s: no NetworkPolicy selects component %q", where, comp)
		}
		for _, name := range []string{"AMS_KAFKA_BROKERS", "AMS_REDIS_ADDR", "AMS_CLICKHOUSE_ADDR", "AMS_MQTT_URL", "AMS_S3_ENDPOINT"} {
			v, ok := env[name]
			if !ok {
				continue
			}
			ports, err := dialPorts(name, v)
			if err != nil {
				t.Errorf("%s: %s %q: %v", where, name, v, err)
			}
			for _, port := range ports {
				var ok bool
				for _, p := range policies[comp] {
					for _, r := range p.Spec.Egress {
						ok = ok || len(r.To) == 0 && admits(r.Ports, port)
					}
				}
				if !ok {
					t.Errorf("%s: dials port %d (%s) but its NetworkPolicy does not admit it", where, port, name)
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
		if w.kind == "Job" {
			continue
		}
		// Ports: every address the role listens on is reachable (not loopback), declared and admitted
		// by its NetworkPolicy; the ops port (no authentication) only from a selected peer.
		named := map[string]int32{}
		declared := map[int]bool{}
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
			declared[int(p.ContainerPort)] = true
		}
		opsPort := 0
		for _, lv := range listen[role] {
			addr, ok := env[lv]
			if !ok {
				addr = vars[lv]
			}
			if addr == "" && lv != "AMS_OPS_ADDR" {
				continue // off
			}
			host, portS, err := net.SplitHostPort(addr)
			if err != nil {
				t.Errorf("%s: %s %q: %v", where, lv, addr, err)
				continue
			}
			if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
				t.Errorf("%s: %s %q listens on loopback only: set it to :%s", where, lv, addr, portS)
			}
			port, _ := strconv.Atoi(portS)
			if lv == "AMS_OPS_ADDR" {
				opsPort = port
			}
			if !declared[port] {
				t.Errorf("%s: listens on %s (%s) but declares ports %v", where, addr, lv, c.Ports)
			}
			var open, fromPeer bool
			for _, p := range policies[comp] {
				for _, r := range p.Spec.Ingress {
					if admits(r.Ports, port) {
						open = open || len(r.From) == 0
						fromPeer = fromPeer || len(r.From) > 0
					}
				}
			}
			switch {
			case lv == "AMS_OPS_ADDR" && open:
				t.Errorf("%s: its NetworkPolicy opens the ops port %d to everyone: admit only the monitoring peers", where, port)
			case !open && !fromPeer:
				t.Errorf("%s: listens on %d (%s) but its NetworkPolicy admits no one there", where, port, lv)
			}
		}
		if opsPort == 0 {
			t.Errorf("%s: no ops port (%v)", where, listen[role])
			continue
		}
		if got := w.pod.Annotations["prometheus.io/port"]; got != strconv.Itoa(opsPort) || w.pod.Annotations["prometheus.io/scrape"] != "true" {
			t.Errorf("%s: Prometheus scrapes port %q (deploy/prometheus reads prometheus.io/port), the ops port is %d", where, got, opsPort)
		}
		for name, pr := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != name {
				t.Errorf("%s: needs an HTTP probe on %s", where, name)
				continue
			}
			pp := pr.HTTPGet.Port
			if got := pp.IntValue(); pp.Type == intstr.String {
				got = int(named[pp.StrVal])
				if got != opsPort {
					t.Errorf("%s: probe %s on port %q (%d), the ops port is %d", where, name, pp.StrVal, got, opsPort)
				}
			} else if got != opsPort {
				t.Errorf("%s: probe %s on port %d, the ops port is %d", where, name, got, opsPort)
			}
		}
		for _, svc := range services {
			if svc.Spec.Selector["app.kubernetes.io/component"] != comp {
				continue
			}
			for _, p := range svc.Spec.Ports {
				if tp := p.TargetPort; tp.Type == intstr.String && named[tp.StrVal] == 0 || tp.Type == intstr.Int && !declared[tp.IntValue()] {
					t.Errorf("%s: Service %s targets port %s, which the container does not declare", where, svc.Name, tp.String())
				}
			}
		}
		// Static group membership: -instance-id is the pod name, stable across in-place restarts.
		if _, ok := vars["AMS_INSTANCE_ID"]; ok {
			if role == "process" && w.kind != "StatefulSet" && env["AMS_INSTANCE_ID"] == "" {
				t.Errorf("%s: the transactional processor needs a stable -instance-id (a StatefulSet's pod name)", where)
			}
			var fromPod bool
			for _, e := range c.Env {
				fromPod = fromPod || (e.Name == "AMS_INSTANCE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name")
			}
			if !fromPod {
				t.Errorf("%s: AMS_INSTANCE_ID must be the pod name (metadata.name): static group membership", where)
			}
		}
		if role == "process" && int(w.replicas) > partitions {
			t.Errorf("%s: %d replicas, more than the %d partitions", where, w.replicas, partitions)
		}
		if a := w.pod.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
			t.Errorf("%s: no pod anti-affinity", where)
		}
		var hasPDB bool
		for _, p := range pdbs {
			hasPDB = hasPDB || p.Spec.Selector.MatchLabels["app.kubernetes.io/component"] == comp
		}
		if !hasPDB {
			t.Errorf("%s: no PodDisruptionBudget", where)
		}
	}
	for _, want := range []string{"migrate", "ingest", "process", "egress", "sink clickhouse", "sink redis", "api", "media-hook", "upload-gateway"} {
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

// TestPrometheusScrapesOpsPort: deploy/prometheus/prometheus.yml scrapes the
// namespace's ams pods that opt in, at the port of their prometheus.io/port
// annotation (which TestManifests holds to each role's -ops-addr), under the
// job ams-<component>.
func TestPrometheusScrapesOpsPort(t *testing.T) {
	b, err := os.ReadFile("../prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName        string `json:"job_name"`
			RelabelConfigs []struct {
				SourceLabels []string `json:"source_labels"`
				Regex        string   `json:"regex"`
				Action       string   `json:"action"`
				Replacement  string   `json:"replacement"`
				TargetLabel  string   `json:"target_label"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var keepScrape, address, job bool
	for _, sc := range cfg.ScrapeConfigs {
		for _, r := range sc.RelabelConfigs {
			src := strings.Join(r.SourceLabels, ";")
			keepScrape = keepScrape || src == "__meta_kubernetes_pod_annotation_prometheus_io_scrape" && r.Action == "keep" && strings.Contains(r.Regex, "true")
			address = address || r.TargetLabel == "__address__" && strings.HasSuffix(src, ";__meta_kubernetes_pod_annotation_prometheus_io_port") && r.Replacement == "$1:$2"
			job = job || r.TargetLabel == "job" && src == "__meta_kubernetes_pod_label_app_kubernetes_io_component" && r.Replacement == "ams-$1"
		}
	}
	if !keepScrape || !address || !job {
		t.Errorf("prometheus.yml: keeps prometheus.io/scrape pods %v, targets the prometheus.io/port annotation %v, job ams-<component> %v", keepScrape, address, job)
	}
}
