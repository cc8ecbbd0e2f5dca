package config

// MetricsFile is the `metrics` section: what /metrics exposes.
type MetricsFile struct {
	// PerKeyLabels labels the transit engine's series with key names (and
	// adds each key's latest-version and reserved-encryption gauges).
	// Default false: series by key type and operation only, so /metrics
	// neither lists key names nor grows with the number of keys.
	PerKeyLabels bool `yaml:"per_key_labels"`
}

// Metrics configures the metrics the server exposes.
type Metrics struct {
	PerKeyLabels bool // transit.Config.PerKeyMetrics
}

func (f MetricsFile) toMetrics() Metrics {
	return Metrics{PerKeyLabels: f.PerKeyLabels}
}
