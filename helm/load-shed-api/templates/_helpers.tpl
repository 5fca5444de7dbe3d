{{/* Chart name, overridable with nameOverride. */}}
{{- define "load-shed-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the api: release-name, unless it already contains the chart name. */}}
{{- define "load-shed-api.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the simulated upstream's Deployment and Service. */}}
{{- define "load-shed-api.upstreamFullname" -}}
{{- printf "%s-upstream" (include "load-shed-api.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "load-shed-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "load-shed-api.labels" -}}
helm.sh/chart: {{ include "load-shed-api.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: load-shed-api
{{- end }}

{{/* Selector labels of one component ("api" or "upstream"); call with (dict "ctx" $ "component" "api"). */}}
{{- define "load-shed-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "load-shed-api.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "load-shed-api.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Service account name. */}}
{{- define "load-shed-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "load-shed-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Environment of the api container: every LOAD_SHED__ key it reads. */}}
{{- define "load-shed-api.apiEnv" -}}
{{- $c := .Values.config -}}
LOAD_SHED__ROLE: "api"
LOAD_SHED__API__LISTEN: {{ printf "0.0.0.0:%d" (int .Values.api.containerPort) | quote }}
LOAD_SHED__API__UPSTREAM_URL: {{ .Values.api.upstreamUrl | default (printf "http://%s:%d" (include "load-shed-api.upstreamFullname" .) (int .Values.upstream.service.port)) | quote }}
LOAD_SHED__API__MAX_UPSTREAM_BODY_BYTES: {{ int64 $c.api.maxUpstreamBodyBytes | quote }}
LOAD_SHED__API__WORKERS: {{ int64 $c.api.workers | quote }}
LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES: {{ $c.upstream.allowRequestOverrides | toString | quote }}
LOAD_SHED__TIMEOUTS__UPSTREAM_MS: {{ int64 $c.timeouts.upstreamMs | quote }}
LOAD_SHED__TIMEOUTS__CONNECT_MS: {{ int64 $c.timeouts.connectMs | quote }}
LOAD_SHED__TIMEOUTS__MIN_BUDGET_MS: {{ int64 $c.timeouts.minBudgetMs | quote }}
LOAD_SHED__BREAKER__FAILURE_THRESHOLD: {{ int64 $c.breaker.failureThreshold | quote }}
LOAD_SHED__BREAKER__OPEN_SECONDS: {{ int64 $c.breaker.openSeconds | quote }}
LOAD_SHED__BREAKER__HALF_OPEN_PROBES: {{ int64 $c.breaker.halfOpenProbes | quote }}
LOAD_SHED__BREAKER__MODE: {{ $c.breaker.mode | quote }}
LOAD_SHED__BREAKER__WINDOW_SIZE: {{ int64 $c.breaker.windowSize | quote }}
LOAD_SHED__BREAKER__MINIMUM_CALLS: {{ int64 $c.breaker.minimumCalls | quote }}
LOAD_SHED__BREAKER__FAILURE_RATE_THRESHOLD: {{ $c.breaker.failureRateThreshold | toString | quote }}
LOAD_SHED__BREAKER__SLOW_CALL_MS: {{ int64 $c.breaker.slowCallMs | quote }}
LOAD_SHED__BREAKER__SLOW_CALL_RATE_THRESHOLD: {{ $c.breaker.slowCallRateThreshold | toString | quote }}
LOAD_SHED__ADMISSION__MAX_INFLIGHT: {{ int64 $c.admission.maxInflight | quote }}
LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT: {{ int64 $c.admission.normalMaxInflight | quote }}
LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT: {{ int64 $c.admission.lowMaxInflight | quote }}
LOAD_SHED__ADMISSION__MODE: {{ $c.admission.mode | quote }}
LOAD_SHED__ADMISSION__MIN_LIMIT: {{ int64 $c.admission.minLimit | quote }}
LOAD_SHED__ADMISSION__MAX_LIMIT: {{ int64 $c.admission.maxLimit | quote }}
LOAD_SHED__ADMISSION__NORMAL_FRACTION: {{ $c.admission.normalFraction | toString | quote }}
LOAD_SHED__ADMISSION__LOW_FRACTION: {{ $c.admission.lowFraction | toString | quote }}
LOAD_SHED__ADMISSION__QUEUE_SIZE: {{ int64 $c.admission.queueSize | quote }}
LOAD_SHED__ADMISSION__QUEUE_TIMEOUT_MS: {{ int64 $c.admission.queueTimeoutMs | quote }}
LOAD_SHED__SHUTDOWN__GRACE_SECONDS: {{ int64 $c.shutdown.graceSeconds | quote }}
{{ include "load-shed-api.serverEnv" . }}
RUST_LOG: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Connection limits, the same for both containers. */}}
{{- define "load-shed-api.serverEnv" -}}
{{- $s := .Values.config.server -}}
LOAD_SHED__SERVER__CLIENT_REQUEST_TIMEOUT_MS: {{ int64 $s.clientRequestTimeoutMs | quote }}
LOAD_SHED__SERVER__KEEP_ALIVE_SECONDS: {{ int64 $s.keepAliveSeconds | quote }}
LOAD_SHED__SERVER__MAX_CONNECTIONS: {{ int64 $s.maxConnections | quote }}
{{- end }}

{{/* Environment of the upstream container. */}}
{{- define "load-shed-api.upstreamEnv" -}}
{{- $c := .Values.config -}}
LOAD_SHED__ROLE: "upstream"
LOAD_SHED__UPSTREAM__LISTEN: {{ printf "0.0.0.0:%d" (int .Values.upstream.containerPort) | quote }}
LOAD_SHED__UPSTREAM__LATENCY_MS: {{ int64 $c.upstream.latencyMs | quote }}
LOAD_SHED__UPSTREAM__FAIL_RATE: {{ $c.upstream.failRate | toString | quote }}
LOAD_SHED__UPSTREAM__WORKERS: {{ int64 $c.upstream.workers | quote }}
LOAD_SHED__UPSTREAM__CONCURRENCY: {{ int64 $c.upstream.concurrency | quote }}
LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS: {{ int64 $c.upstream.degradeAfterSeconds | quote }}
LOAD_SHED__UPSTREAM__DEGRADED_CONCURRENCY: {{ int64 $c.upstream.degradedConcurrency | quote }}
LOAD_SHED__UPSTREAM__JITTER_MS: {{ int64 $c.upstream.jitterMs | quote }}
LOAD_SHED__UPSTREAM__TAIL_RATE: {{ $c.upstream.tailRate | toString | quote }}
LOAD_SHED__UPSTREAM__TAIL_MS: {{ int64 $c.upstream.tailMs | quote }}
LOAD_SHED__UPSTREAM__FAIL_STATUS: {{ int64 $c.upstream.failStatus | quote }}
LOAD_SHED__UPSTREAM__HANG_RATE: {{ $c.upstream.hangRate | toString | quote }}
LOAD_SHED__UPSTREAM__RESET_RATE: {{ $c.upstream.resetRate | toString | quote }}
LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES: {{ $c.upstream.allowRequestOverrides | toString | quote }}
LOAD_SHED__SHUTDOWN__GRACE_SECONDS: {{ int64 $c.shutdown.graceSeconds | quote }}
{{ include "load-shed-api.serverEnv" . }}
RUST_LOG: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Longer than preStop + drain grace, so Kubernetes never kills a pod that is still draining. */}}
{{- define "load-shed-api.terminationGracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.config.shutdown.graceSeconds) (int .Values.lifecycle.extraTerminationSeconds) }}
{{- end }}
