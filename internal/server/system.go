package server

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// HSMPinger is what the status service needs of the HSM (*hsm.Module).
type HSMPinger interface {
	// Ping returns nil when the token answers with a logged-in session
	// (hsm.ErrUnavailable otherwise).
	Ping(ctx context.Context) error
	TokenLabel() string
}

// StorePinger is what the status service needs of the key store (keystore.Store).
type StorePinger interface {
	// Ping returns nil when the backend answers (keystore.ErrUnavailable otherwise).
	Ping(ctx context.Context) error
	Backend() string
}

// DefaultPingTimeout bounds each dependency ping in GetStatus.
const DefaultPingTimeout = 3 * time.Second

// SystemConfig configures the SystemService.
type SystemConfig struct {
	Version     string
	HSM         HSMPinger
	Store       StorePinger
	Start       time.Time        // zero: now
	Now         func() time.Time // nil: time.Now
	PingTimeout time.Duration    // zero: DefaultPingTimeout
}

// SystemService implements hsmgate.v1.SystemService.
type SystemService struct {
	hsmgatev1.UnimplementedSystemServiceServer
	cfg SystemConfig
}

var _ hsmgatev1.SystemServiceServer = (*SystemService)(nil)

// NewSystemService returns the status service.
func NewSystemService(cfg SystemConfig) *SystemService {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Start.IsZero() {
		cfg.Start = cfg.Now()
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	return &SystemService{cfg: cfg}
}

// SystemRules are the auth rules of SystemService, health and reflection.
// Health and reflection are public so that probes and grpcurl work without
// credentials. Status is anonymous: without credentials it answers its
// public part (version, state, which dependency is down), rate limited per
// client address; with credentials it needs `read` on sys/status.
func SystemRules() auth.Table {
	return auth.Table{
		hsmgatev1.SystemService_GetStatus_FullMethodName:                 {Anonymous: true, Capability: auth.CapRead, Path: "sys/status"},
		"/grpc.health.v1.Health/Check":                                   {Public: true},
		"/grpc.health.v1.Health/Watch":                                   {Public: true},
		"/grpc.health.v1.Health/List":                                    {Public: true},
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {Public: true},
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {Public: true},
	}
}

// GetStatus pings the HSM and the store concurrently and reports both.
func (s *SystemService) GetStatus(ctx context.Context, _ *hsmgatev1.GetStatusRequest) (*hsmgatev1.GetStatusResponse, error) {
	var h, st *hsmgatev1.ComponentStatus
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h = s.ping(ctx, s.cfg.HSM, func() string { return s.cfg.HSM.TokenLabel() })
	}()
	go func() {
		defer wg.Done()
		st = s.ping(ctx, s.cfg.Store, func() string { return s.cfg.Store.Backend() })
	}()
	wg.Wait()
	state := hsmgatev1.GetStatusResponse_STATE_SERVING
	if !h.GetReachable() || !st.GetReachable() {
		state = hsmgatev1.GetStatusResponse_STATE_DEGRADED
	}
	if auth.IsAnonymous(ctx) {
		// The public part: no names, errors, latencies or times.
		return &hsmgatev1.GetStatusResponse{
			Version:    s.cfg.Version,
			State:      state,
			PublicView: true,
			Hsm:        &hsmgatev1.ComponentStatus{Reachable: h.GetReachable()},
			Store:      &hsmgatev1.ComponentStatus{Reachable: st.GetReachable()},
		}, nil
	}
	now := s.cfg.Now()
	return &hsmgatev1.GetStatusResponse{
		Version:   s.cfg.Version,
		State:     state,
		Hsm:       h,
		Store:     st,
		Uptime:    durationpb.New(now.Sub(s.cfg.Start)),
		StartTime: timestamppb.New(s.cfg.Start),
	}, nil
}

type pinger interface{ Ping(context.Context) error }

func (s *SystemService) ping(ctx context.Context, p pinger, name func() string) *hsmgatev1.ComponentStatus {
	if p == nil {
		return &hsmgatev1.ComponentStatus{Error: "not configured"}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PingTimeout)
	defer cancel()
	start := s.cfg.Now()
	err := p.Ping(ctx)
	cs := &hsmgatev1.ComponentStatus{
		Reachable: err == nil,
		Name:      name(),
		Latency:   durationpb.New(s.cfg.Now().Sub(start)),
	}
	if err != nil {
		cs.Error = errs.GRPCStatus(err).Message()
	}
	return cs
}
