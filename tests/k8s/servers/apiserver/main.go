// kube-apiserver, built from k8s.io/kubernetes for Switchyard's Kubernetes tests:
// the real API server, started on 127.0.0.1 next to etcd (no kubelet).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
