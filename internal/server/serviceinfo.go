package server

import (
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// builtinServices are registered by Serve on every server.
var builtinServices = []*grpc.ServiceDesc{
	&healthpb.Health_ServiceDesc,
	&reflectionv1.ServerReflection_ServiceDesc,
	&reflectionv1alpha.ServerReflection_ServiceDesc,
}

// GetServiceInfo lists every service the server serves (or will serve, before
// Serve): those registered plus health and reflection, like
// grpc.Server.GetServiceInfo. auth.CheckTableCovers uses it to prove that
// every method has an authorisation rule.
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	s.mu.Lock()
	descs := append([]*grpc.ServiceDesc(nil), builtinServices...)
	for _, r := range s.services {
		descs = append(descs, r.desc)
	}
	s.mu.Unlock()
	out := make(map[string]grpc.ServiceInfo, len(descs))
	for _, d := range descs {
		info := grpc.ServiceInfo{Metadata: d.Metadata}
		for _, m := range d.Methods {
			info.Methods = append(info.Methods, grpc.MethodInfo{Name: m.MethodName})
		}
		for _, st := range d.Streams {
			info.Methods = append(info.Methods, grpc.MethodInfo{
				Name: st.StreamName, IsClientStream: st.ClientStreams, IsServerStream: st.ServerStreams,
			})
		}
		out[d.ServiceName] = info
	}
	return out
}
