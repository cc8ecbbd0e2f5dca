package server

import (
	"net/http"
	"strings"
	"sync"
)

// prefixRoutes sends a request whose path begins with a registered prefix
// to that prefix's handler before the mux sees it, with the path as the
// client sent it. http.ServeMux first cleans a path (it collapses "//" and
// drops "." and ".." segments) and redirects the client to the clean one.
// That loses data in a path that carries data: an OCSP GET request is
// base64 in the path (RFC 6960 A.1), about one in forty holds "//", and
// OCSP clients do not all URL-encode it.
type prefixRoutes struct {
	mu     sync.RWMutex
	routes []prefixRoute
}

type prefixRoute struct {
	prefix string
	h      http.Handler
}

func (p *prefixRoutes) add(prefix string, h http.Handler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.routes = append(p.routes, prefixRoute{prefix, h})
}

// then is the handler that tries the prefixes, in the order they were
// added, and otherwise next.
func (p *prefixRoutes) then(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := next
		p.mu.RLock()
		for _, rt := range p.routes {
			if strings.HasPrefix(r.URL.Path, rt.prefix) {
				h = rt.h
				break
			}
		}
		p.mu.RUnlock()
		h.ServeHTTP(w, r)
	})
}
