// Command etcd is the etcd server that Kubernetes 1.36 is built and tested against,
// built from its Go module so that the test control plane needs no download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
