{{/* Names truncated to 63 characters, as Kubernetes label values and DNS names require. */}}
{{- define "c2d.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "c2d.fullname" -}}
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

{{- define "c2d.labels" -}}
app.kubernetes.io/name: {{ include "c2d.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "c2d.selectorLabels" -}}
app.kubernetes.io/name: {{ include "c2d.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Job pods carry these (set by the engine, pod_labels in c2d_defs/k8s_manifests.py); policies select on them. */}}
{{- define "c2d.jobPodSelector" -}}
app.kubernetes.io/name: c2d
app.kubernetes.io/managed-by: c2d-engine
{{- end -}}

{{/* repository:tag; a tag may carry a digest ("0.1.0@sha256:..."). */}}
{{- define "c2d.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/* The result store's settings (c2d_core.result_stores.S3Settings), as `NAME: "value"` lines: the
engine ConfigMap holds them, and the Provider gets the same through `fromYaml`. No credentials. */}}
{{- define "c2d.resultStoreEnv" -}}
{{- $r := .Values.resultStore -}}
C2D_RESULT_STORE: {{ $r.kind | quote }}
{{- if eq $r.kind "s3" }}
C2D_S3_BUCKET: {{ $r.s3.bucket | quote }}
C2D_S3_ENDPOINT_URL: {{ $r.s3.endpointUrl | quote }}
C2D_S3_REGION: {{ $r.s3.region | quote }}
C2D_S3_PREFIX: {{ $r.s3.prefix | quote }}
C2D_S3_SSE: {{ $r.s3.sse | quote }}
C2D_S3_KMS_KEY_ID: {{ $r.s3.kmsKeyId | quote }}
C2D_S3_MAX_ATTEMPTS: {{ $r.s3.maxAttempts | int64 | quote }}
C2D_S3_TIMEOUT: {{ $r.s3.timeoutSeconds | quote }}
{{- end }}
{{- if eq $r.kind "ipfs" }}
C2D_IPFS_API_URL: {{ $r.ipfs.apiUrl | quote }}
{{- end }}
{{- end -}}

{{/* The dagster subchart's full name, by that chart's own rule (its "dagster.fullname"): the instance
ConfigMap and the Postgres Secret it names are derived from it. */}}
{{- define "c2d.dagsterFullname" -}}
{{- $g := .Values.dagster.global | default dict -}}
{{- if $g.fullnameOverride -}}
{{- $g.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "dagster" $g.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the engine's instance file (key dagster.yaml) the Provider reads run storage
through: provider.dagsterInstance.configMap, else the dagster chart's `<fullname>-instance`. */}}
{{- define "c2d.dagsterInstanceConfigMap" -}}
{{- .Values.provider.dagsterInstance.configMap | default (printf "%s-instance" (include "c2d.dagsterFullname" .)) -}}
{{- end -}}

{{/* The Secret with the run storage's Postgres password: provider.dagsterInstance.postgresSecret, else
the dagster chart's (dagster.global.postgresqlSecretName, else `<fullname>-postgresql-secret`). */}}
{{- define "c2d.dagsterPostgresSecret" -}}
{{- $g := .Values.dagster.global | default dict -}}
{{- .Values.provider.dagsterInstance.postgresSecret | default $g.postgresqlSecretName | default (printf "%s-postgresql-secret" (include "c2d.dagsterFullname" .)) -}}
{{- end -}}
