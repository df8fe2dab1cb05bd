// Package manifests holds no code: its tests render the Kustomize base and the
// production overlay in this directory and check every object against the
// Kubernetes API types, the `ams config` flag table and the container image
// (deploy/container/Dockerfile). The k8s.io and sigs.k8s.io modules it uses
// are imported by tests only: no ams binary links them.
package manifests
