// etcd, built from its Go module for Switchyard's Kubernetes tests (the store
// kube-apiserver needs), started on 127.0.0.1.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
