{{/* Names. */}}
{{- define "hsmgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hsmgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hsmgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hsmgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; the selector labels pick the server pods only. */}}
{{- define "hsmgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "hsmgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hsmgate
{{- end -}}

{{- define "hsmgate.instanceLabels" -}}
app.kubernetes.io/name: {{ include "hsmgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hsmgate.selectorLabels" -}}
{{ include "hsmgate.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{/* An image reference from {repository, tag, digest}; tag defaults to the appVersion. */}}
{{- define "hsmgate.imageRef" -}}
{{- $img := index . 0 -}}{{- $default := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $default $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
pki.base_url: the Service's stable in-cluster name unless set. Never localhost or a
loopback address: every certificate would point its relying parties at themselves.
*/}}
{{- define "hsmgate.baseURL" -}}
{{- $port := "" -}}
{{- if ne (int .Values.service.ports.pki) 80 -}}{{- $port = printf ":%v" .Values.service.ports.pki -}}{{- end -}}
{{- $u := .Values.pki.baseURL | default (printf "http://%s.%s.svc%s" (include "hsmgate.fullname" .) .Release.Namespace $port) -}}
{{- $host := (urlParse $u).host | lower -}}
{{- $hostname := regexReplaceAll ":[0-9]+$" $host "" | trimAll "[]" -}}
{{- if or (eq $hostname "localhost") (hasSuffix ".localhost" $hostname) (hasPrefix "127." $hostname) (eq $hostname "::1") (eq $hostname "0.0.0.0") (eq $hostname "::") (eq $hostname "") -}}
{{- fail (printf "pki.baseURL %q: relying parties cannot reach %q; name the Service or a shared front" $u $hostname) -}}
{{- end -}}
{{- $u -}}
{{- end -}}

{{/* The server config file (schema: internal/config/file.go). */}}
{{- define "hsmgate.config" -}}
{{- $c := .Values.config -}}
# Rendered by the hsmgate Helm chart from its values. Paths are where the pods mount each
# Secret; the PIN, the etcd password and the audit key are named by variable only.
{{- $p := .Values.service.ports }}
{{- $pp := int .Values.pki.containerPort }}
{{- if or (eq (int $p.metrics) (int $p.grpc)) (eq (int $p.metrics) (int $p.https)) (eq (int $p.grpc) (int $p.https)) (eq $pp (int $p.grpc)) (eq $pp (int $p.https)) (eq $pp (int $p.metrics)) }}
{{- fail (printf "service.ports: grpc %v, https %v, metrics %v and pki.containerPort %v must be four different ports" $p.grpc $p.https $p.metrics $pp) }}
{{- end }}
listen:
  grpc: ":{{ $p.grpc }}"
  http: ":{{ $p.https }}"
  metrics: ":{{ $p.metrics }}"   # plain HTTP, /metrics only: reached only from networkPolicy.metricsFrom
  pki: ":{{ $pp }}"   # plain HTTP, /pki/ only (CA certificates, CRLs, OCSP): what pki.base_url names
tls:
  cert: /etc/hsmgate/tls/tls.crt
  key: /etc/hsmgate/tls/tls.key
  {{- if .Values.tls.clientCA }}
  client_ca: /etc/hsmgate/tls/ca.crt
  {{- end }}
  min_version: {{ .Values.tls.minVersion | quote }}
hsm:
  {{- if not (hasPrefix "/opt/hsm/" .Values.hsmClient.library) }}
  {{- fail (printf "hsmClient.library %q: must lie under /opt/hsm/, where the hsm-client init container puts the vendor's client" .Values.hsmClient.library) }}
  {{- end }}
  library: {{ .Values.hsmClient.library | quote }}
  token_label: {{ required "hsm.tokenLabel is required" .Values.hsm.tokenLabel | quote }}
  pin_env: HSMGATE_HSM_PIN
  kek_label: {{ required "hsm.kekLabel is required" .Values.hsm.kekLabel | quote }}
  max_sessions: {{ int .Values.hsm.maxSessions }}
  wait_timeout: {{ .Values.hsm.waitTimeout | quote }}
store:
  backend: etcd
  etcd:
    endpoints:
      {{- range (required "etcd.endpoints is required" .Values.etcd.endpoints) }}
      - {{ . | quote }}
      {{- end }}
    prefix: {{ .Values.etcd.prefix | quote }}
    dial_timeout: {{ .Values.etcd.dialTimeout | quote }}
    request_timeout: {{ .Values.etcd.requestTimeout | quote }}
    {{- if .Values.etcd.username }}
    username: {{ .Values.etcd.username | quote }}
    {{- if .Values.etcd.passwordSecret.name }}
    password_env: HSMGATE_ETCD_PASSWORD
    {{- end }}
    {{- end }}
    {{- if .Values.etcd.tls.enabled }}
    tls:
      ca: /etc/hsmgate/etcd/ca.crt
      {{- if .Values.etcd.tls.clientCert }}
      cert: /etc/hsmgate/etcd/tls.crt
      key: /etc/hsmgate/etcd/tls.key
      {{- end }}
    {{- end }}
{{- with $c.limits }}
limits:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.shutdown }}
shutdown:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.log }}
log:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.auth }}
auth:
  {{- toYaml . | nindent 2 }}
{{- end }}
audit:
  path: /var/log/hsmgate/audit.log
  hmac_key_env: HSMGATE_AUDIT_HMAC_KEY
  {{- with $c.audit }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
pki:
  base_url: {{ include "hsmgate.baseURL" . | quote }}
{{- end -}}

{{/* Environment of the init Job: the PIN only (init opens the HSM, not the store or the audit log). */}}
{{- define "hsmgate.initEnv" -}}
- name: HSMGATE_HSM_PIN                  # hsm.pin_env
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.name | quote }}, key: {{ .Values.secrets.hsmPINKey | quote }}}
{{- with .Values.hsmClient.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Environment of the server: every secret the config names, by variable. */}}
{{- define "hsmgate.serverEnv" -}}
{{ include "hsmgate.initEnv" . }}
- name: HSMGATE_AUDIT_HMAC_KEY           # audit.hmac_key_env (hex)
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.name | quote }}, key: {{ .Values.secrets.auditHMACKeyKey | quote }}}
{{- if and .Values.etcd.username .Values.etcd.passwordSecret.name }}
- name: HSMGATE_ETCD_PASSWORD            # store.etcd.password_env
  valueFrom:
    secretKeyRef: {name: {{ .Values.etcd.passwordSecret.name | quote }}, key: {{ .Values.etcd.passwordSecret.key | quote }}}
{{- end }}
- name: GOMEMLIMIT                       # the Go GC works to the container's memory limit
  valueFrom:
    resourceFieldRef: {resource: limits.memory}
{{- end -}}

{{/* The hsm-client init container: copies the vendor's PKCS#11 client into the hsm-lib emptyDir. */}}
{{- define "hsmgate.hsmClientInit" -}}
- name: hsm-client
  image: {{ include "hsmgate.imageRef" (list .Values.hsmClient.image "dev") | quote }}
  imagePullPolicy: {{ .Values.hsmClient.image.pullPolicy }}
  command: {{- toYaml .Values.hsmClient.copyCommand | nindent 4 }}
  securityContext: {{- toYaml .Values.securityContext | nindent 4 }}
  resources: {{- toYaml .Values.hsmClient.resources | nindent 4 }}
  volumeMounts:
    - {name: hsm-lib, mountPath: /hsm-lib}
{{- end -}}

{{/* Mounts shared by the server and the init Job (config.Load checks every file the config names). */}}
{{- define "hsmgate.mounts" -}}
- {name: config, mountPath: /etc/hsmgate/config, readOnly: true}
- {name: tls, mountPath: /etc/hsmgate/tls, readOnly: true}
{{- if .Values.etcd.tls.enabled }}
- {name: etcd-tls, mountPath: /etc/hsmgate/etcd, readOnly: true}
{{- end }}
- {name: hsm-lib, mountPath: /opt/hsm, readOnly: true}
- {name: hsm-client-config, mountPath: /etc/hsm-client, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "hsmgate.volumes" -}}
- name: tls
  secret: {secretName: {{ .Values.tls.secretName | quote }}, defaultMode: 0440}
{{- if .Values.etcd.tls.enabled }}
- name: etcd-tls
  secret: {secretName: {{ .Values.etcd.tls.secretName | quote }}, defaultMode: 0440}
{{- end }}
- name: hsm-lib
  emptyDir: {sizeLimit: {{ .Values.hsmClient.libSizeLimit }}}
- name: hsm-client-config
  secret: {secretName: {{ .Values.hsmClient.configSecret | quote }}, defaultMode: 0440, optional: true}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 64Mi}
{{- end -}}
