package config

import (
	"os"
	"strings"
)

// TracingFile is the `tracing` section:
//
//	tracing:
//	  enabled: true   # OpenTelemetry traces of every RPC (default false)
//
// Where the traces go is set by the standard OpenTelemetry variables
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...);
// the exporter is OTLP over gRPC. OTEL_TRACES_EXPORTER=otlp turns tracing
// on without the file; OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true
// turn it off whatever the file says.
type TracingFile struct {
	Enabled bool `yaml:"enabled"`
}

// Tracing is the runtime form of TracingFile.
type Tracing struct {
	Enabled bool
}

// toTracing applies the OTEL_* switches to the file's choice.
func (f TracingFile) toTracing() Tracing {
	return Tracing{Enabled: TracingEnabled(f.Enabled, os.Getenv)}
}

// TracingEnabled decides whether tracing is on from the file's choice and
// the environment (getenv).
func TracingEnabled(file bool, getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return file
}
