// Command pause is the sandbox ("pause") container of the dev cluster's real
// node: it holds the pod's namespaces open until it is told to stop. No pause
// image can be pulled here, so this static binary goes into a FROM-scratch
// image built by moorage.devcluster.images.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// As PID 1 of a pod that shares its process namespace, reap orphans.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
