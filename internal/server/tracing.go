package server

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/stats"
)

// Tracing is OpenTelemetry tracing of the server's RPCs (off unless the
// config or OTEL_TRACES_EXPORTER turns it on; see config.TracingFile).
type Tracing struct {
	// Handler goes in Config.StatsHandlers: one server span per RPC
	// (health checks excepted), continuing a caller's W3C traceparent.
	Handler stats.Handler
	tp      *sdktrace.TracerProvider
}

// NewTracing makes an OTLP/gRPC exporter configured by the standard
// OTEL_EXPORTER_OTLP_* variables, and a batching tracer provider (sampler
// from OTEL_TRACES_SAMPLER, default parent-based always-on; resource
// service.name "hsmgate" unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise). It does not touch the otel
// globals. Shutdown flushes it.
func NewTracing(ctx context.Context, serviceVersion string) (*Tracing, error) {
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "hsmgate"), attribute.String("service.version", serviceVersion)),
		resource.WithFromEnv(), // later wins: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("server: tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	h := otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		otelgrpc.WithFilter(func(i *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(i.FullMethodName, "/grpc.health.v1.Health/")
		}),
	)
	return &Tracing{Handler: h, tp: tp}, nil
}

// Shutdown flushes the spans not yet exported and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("server: tracing: shutdown: %w", err)
	}
	return nil
}
