// pullnet: the file servers of the pull benchmark, in Go so that the server is not what is measured.
//
//	pullnet -root DIR -upstream URL [-cdn ADDR] [-hub ADDR[=CDN_URL]]...
//
// The CDN listener serves DIR with net/http.FileServer (Range requests, sendfile from the page cache).
// Each hub listener forwards requests to the hub at -upstream (moorage's fake hub, which speaks the hub API)
// and turns its redirects of LFS files to /cdn/... into redirects to CDN_URL (default: the CDN listener; a
// WAN emulator's address in front of it otherwise), as huggingface.co redirects to a CDN on another origin.
// Answers of the hub other than file bodies (API calls, redirects) are cached: for a commit sha they never
// change, and the fake hub computes the sha256 of every file on each of them, which would be measured
// instead of the clients. It prints "cdn HOST:PORT" and "hub HOST:PORT" once listening, then serves until
// killed.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
)

type hubFlag []string

func (h *hubFlag) String() string     { return strings.Join(*h, ",") }
func (h *hubFlag) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	root := flag.String("root", ".", "directory the CDN serves")
	cdnAddr := flag.String("cdn", "127.0.0.1:0", "CDN listen address (port 0: a free one)")
	upstream := flag.String("upstream", "", "URL of the hub to forward to")
	var hubs, static hubFlag
	flag.Var(&hubs, "hub", "hub listen address, =CDN_URL for the redirects' target (repeatable)")
	flag.Var(&static, "static", "URL_PATH=FILE: the hub answers this path with this JSON file (repeatable)")
	flag.Parse()

	cdn := listen("cdn", *cdnAddr)
	go serve(cdn, http.FileServer(http.Dir(*root)))
	target, err := url.Parse(*upstream)
	if len(hubs) > 0 && (err != nil || target.Host == "") {
		log.Fatalf("-upstream: a URL is needed with -hub, not %q", *upstream)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	// A new connection per request: the fake hub (Python's http.server) and Go's pool of idle connections
	// disagree about when one is closed, which shows as 502s.
	proxy.Transport = &http.Transport{DisableKeepAlives: true}
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() == nil { // a client that went away (aria2c drops spare connections) is no news
			log.Printf("hub: %s %s: %v", r.Method, r.URL, err)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	cache := &cache{proxy: proxy, answers: map[string]*answer{}}
	for _, entry := range static {
		// Endpoints the fake hub lacks, such as the tree listing huggingface_hub's snapshot_download reads.
		path, file, _ := strings.Cut(entry, "=")
		body, err := os.ReadFile(file)
		if err != nil {
			log.Fatal(err)
		}
		header := http.Header{"Content-Type": {"application/json"}}
		cache.static = append(cache.static, route{path, &answer{http.StatusOK, header, body}})
	}
	for _, hub := range hubs {
		address, base, _ := strings.Cut(hub, "=")
		if base == "" {
			base = "http://" + cdn.Addr().String()
		}
		go serve(listen("hub", address), &redirector{cache: cache, base: strings.TrimRight(base, "/")})
	}
	select {}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

type route struct {
	path   string
	answer *answer
}

type cache struct {
	proxy   *httputil.ReverseProxy
	static  []route
	mu      sync.Mutex
	answers map[string]*answer
}

// get answers from the cache, or asks the hub; only redirects and API answers are kept.
func (c *cache) get(r *http.Request) *answer {
	for _, route := range c.static {
		if r.URL.Path == route.path {
			return route.answer
		}
	}
	key := r.Method + " " + r.URL.String() + " " + r.Header.Get("Authorization")
	c.mu.Lock()
	cached := c.answers[key]
	c.mu.Unlock()
	if cached != nil {
		return cached
	}
	recorder := httptest.NewRecorder()
	c.proxy.ServeHTTP(recorder, r)
	got := &answer{recorder.Code, recorder.Header(), recorder.Body.Bytes()}
	redirect := got.status >= 300 && got.status < 400
	if !redirect && (got.status >= 300 || strings.Contains(r.URL.Path, "/resolve/")) {
		return got // errors (a client that went away makes a 502) and file bodies
	}
	c.mu.Lock()
	c.answers[key] = got
	c.mu.Unlock()
	return got
}

type redirector struct {
	cache *cache
	base  string
}

func (h *redirector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got := h.cache.get(r)
	for name, values := range got.header {
		w.Header()[name] = values
	}
	if location := got.header.Get("Location"); strings.HasPrefix(location, "/cdn/") {
		w.Header().Set("Location", h.base+location)
	}
	w.WriteHeader(got.status)
	w.Write(got.body)
}

func listen(name, address string) net.Listener {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	fmt.Printf("%s %s\n", name, listener.Addr())
	return listener
}

func serve(listener net.Listener, handler http.Handler) {
	log.Fatal((&http.Server{Handler: handler}).Serve(listener))
}
