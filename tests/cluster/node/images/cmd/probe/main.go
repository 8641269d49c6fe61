// Command probe is the one program of the dev cluster's test image: it serves
// HTTP and checks, from inside a pod, what the real node's tests need to see
// (cluster DNS, Services, the API server, the local hub).
//
//	probe serve [ADDR]             answer GET / with "probe <hostname>" (default :8080)
//	probe resolve NAME             print NAME's addresses
//	probe get URL [--service-account]
//	                               GET URL, print the body; with --service-account, trust the
//	                               pod's service account CA and send its token
//	probe echo WORDS...            print WORDS (for kubectl exec)
//	probe write FILE TEXT          write TEXT to FILE (is a volume writable?)
//	probe sleep                    wait for SIGTERM
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe serve|resolve|get|echo|write|sleep ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(args) > 0 {
			addr = args[0]
		}
		serve(addr)
	case "resolve":
		need(args, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
		if err != nil {
			fail(err.Error())
		}
		fmt.Println(strings.Join(addrs, "\n"))
	case "get":
		need(args, 1)
		get(args[0], len(args) > 1 && args[1] == "--service-account")
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "write":
		need(args, 2)
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fail(err.Error())
		}
	case "sleep":
		wait()
	default:
		fail("unknown command " + os.Args[1])
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "probe %s\n", host)
	})
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		wait()
		_ = server.Close()
	}()
	fmt.Printf("probe serving on %s\n", addr)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fail(err.Error())
	}
}

func get(url string, serviceAccount bool) {
	client := &http.Client{Timeout: 15 * time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fail(err.Error())
	}
	if serviceAccount {
		token, err := os.ReadFile(saDir + "/token")
		if err != nil {
			fail(err.Error())
		}
		ca, err := os.ReadFile(saDir + "/ca.crt")
		if err != nil {
			fail(err.Error())
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := client.Do(req)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Sprintf("GET %s: %s", url, resp.Status))
	}
}

func wait() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}

func need(args []string, n int) {
	if len(args) < n {
		fail(fmt.Sprintf("%s needs %d argument(s)", os.Args[1], n))
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "probe:", msg)
	os.Exit(1)
}
