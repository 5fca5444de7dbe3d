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

{{/*
The fullname with a suffix, at most 63 characters: the base is cut to make room before the suffix
is added, so every suffixed name stays distinct from the fullname and from each other.
Call with (list $ "-env").
*/}}
{{- define "load-shed-api.suffixed" -}}
{{- $suffix := index . 1 }}
{{- printf "%s%s" (include "load-shed-api.fullname" (index . 0) | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* Name of the simulated upstream's Deployment and Service. */}}
{{- define "load-shed-api.upstreamFullname" -}}
{{- include "load-shed-api.suffixed" (list . "-upstream") }}
{{- end }}

{{/*
The api Deployment's replicas while an autoscaler (HPA or KEDA) owns the count: the count it has
now (so an upgrade, or turning autoscaling back on, never resets it), else minReplicas; always
within [minReplicas, maxReplicas]. `helm template` and dry runs see no cluster: minReplicas.
*/}}
{{- define "load-shed-api.autoscaledReplicas" -}}
{{- $a := .Values.autoscaling }}
{{- $live := lookup "apps/v1" "Deployment" .Release.Namespace (include "load-shed-api.fullname" .) }}
{{- $current := int (dig "spec" "replicas" $a.minReplicas $live) }}
{{- max (int $a.minReplicas) (min (int $a.maxReplicas) $current) }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "load-shed-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object: `kubectl get all,cm,sa,prometheusrule -l app.kubernetes.io/instance=<release>` finds them all. */}}
{{- define "load-shed-api.labels" -}}
helm.sh/chart: {{ include "load-shed-api.chart" . }}
app.kubernetes.io/name: {{ include "load-shed-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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

{{/*
The binary's configuration as environment, generically: every key of the named sections of
.Values.config becomes LOAD_SHED__<SECTION>__<KEY> (camelCase keys to snake_case), so a new key
needs no line here. Call with (dict "ctx" $ "sections" (list "api" "timeouts")).
*/}}
{{- define "load-shed-api.configEnv" -}}
{{- range $section := .sections }}
{{- range $key, $value := index $.ctx.Values.config $section }}
{{ printf "LOAD_SHED__%s__%s" (upper $section) (upper (snakecase $key)) }}: {{ include "load-shed-api.envValue" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* One configuration value as an environment string: whole numbers without an exponent. */}}
{{- define "load-shed-api.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}

{{/* Environment of the api container: its own sections, plus whether callers may pass overrides on. */}}
{{- define "load-shed-api.apiEnv" -}}
LOAD_SHED__ROLE: "api"
LOAD_SHED__API__LISTEN: {{ printf "0.0.0.0:%d" (int .Values.api.containerPort) | quote }}
LOAD_SHED__API__UPSTREAM_URL: {{ .Values.api.upstreamUrl | default (printf "http://%s:%d" (include "load-shed-api.upstreamFullname" .) (int .Values.upstream.service.port)) | quote }}
{{- include "load-shed-api.configEnv" (dict "ctx" . "sections" (list "api" "timeouts" "breaker" "admission" "retry" "server" "shutdown")) }}
LOAD_SHED__UPSTREAM__ALLOW_REQUEST_OVERRIDES: {{ include "load-shed-api.envValue" .Values.config.upstream.allowRequestOverrides }}
RUST_LOG: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Environment of the upstream container. */}}
{{- define "load-shed-api.upstreamEnv" -}}
LOAD_SHED__ROLE: "upstream"
LOAD_SHED__UPSTREAM__LISTEN: {{ printf "0.0.0.0:%d" (int .Values.upstream.containerPort) | quote }}
{{- include "load-shed-api.configEnv" (dict "ctx" . "sections" (list "upstream" "server" "shutdown")) }}
RUST_LOG: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Longer than preStop + drain delay + drain grace, so Kubernetes never kills a pod that is still draining. */}}
{{- define "load-shed-api.terminationGracePeriodSeconds" -}}
{{- $s := .Values.config.shutdown }}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int $s.drainDelaySeconds) (int $s.graceSeconds) (int .Values.lifecycle.extraTerminationSeconds) }}
{{- end }}

{{/*
The autoscaling query: the sum over this release's api pods of autoscaling_load_ratio, i.e. the
demand in units of one replica's capacity (the labels are the ones the ServiceMonitor gives).
*/}}
{{- define "load-shed-api.loadQuery" -}}
{{- printf "sum(autoscaling_load_ratio{job=%q,namespace=%q,service=%q})" .Values.serviceMonitor.jobName .Release.Namespace (include "load-shed-api.fullname" .) }}
{{- end }}
