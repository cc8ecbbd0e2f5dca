package server

import "google.golang.org/grpc"

// RegisteredService returns the descriptor and implementation registered
// for a gRPC service (e.g. "hsmgate.v1.TransitService"), for in-process
// callers such as the Vault-compatible door, which invoke a method's
// generated handler with UnaryInterceptors so that authentication,
// authorisation, rate limits and audit are the RPC's own.
func (s *Server) RegisteredService(name string) (*grpc.ServiceDesc, any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.services {
		if r.desc.ServiceName == name {
			return r.desc, r.impl, true
		}
	}
	return nil, nil, false
}

// UnaryInterceptors returns the unary interceptors added with Config or Use
// (auth and audit), in the order the gRPC server runs them.
func (s *Server) UnaryInterceptors() []grpc.UnaryServerInterceptor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]grpc.UnaryServerInterceptor(nil), s.unary...)
}
