// Command pause is the test node's sandbox image: the process that holds a
// pod's namespaces while its containers come and go, as the pause image of a
// Kubernetes node does. It waits for SIGINT or SIGTERM and, as PID 1 of a pod
// that shares its process namespace, reaps the children it inherits.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
