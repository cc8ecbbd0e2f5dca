// Package deploy holds no code: it is the home of hsmgate's deployment files
// (example configs, the systemd unit, Kubernetes and cert-manager manifests,
// the Dockerfile; see README.md). Its test checks that those files agree with
// the config schema, the binary's flags and the server's endpoints.
package deploy
