{{/* Names. */}}
{{- define "tapedeck.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tapedeck.fullname" -}}
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

{{/* "<fullname>-<component>", kept within 63 characters. */}}
{{- define "tapedeck.component" -}}
{{- printf "%s-%s" (include "tapedeck.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "tapedeck.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (dict "root" $ "component" "api"). */}}
{{- define "tapedeck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tapedeck.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tapedeck.labels" -}}
helm.sh/chart: {{ include "tapedeck.chart" .root }}
{{ include "tapedeck.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tapedeck
{{- end }}

{{/* The labels the operator gives compile pods (operator/tapedeck_operator/jobs.py), the
  release's instance label from TAPEDECK_INSTANCE: another release's compile pods in the same
  namespace are not this release's. */}}
{{- define "tapedeck.compileSelector" -}}
app.kubernetes.io/name: tapedeck
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: compile
app.kubernetes.io/managed-by: tapedeck-operator
{{- end }}

{{- define "tapedeck.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tapedeck.compileImage" -}}
{{- printf "%s:%s" .Values.compileImage.repository (default .Chart.AppVersion .Values.compileImage.tag) }}
{{- end }}

{{- define "tapedeck.secretName" -}}
{{- default (include "tapedeck.component" (dict "root" . "component" "secret")) .Values.auth.existingSecret }}
{{- end }}

{{- define "tapedeck.storageAddr" -}}
{{- printf "%s:%d" (include "tapedeck.component" (dict "root" . "component" "storage")) (int .Values.storage.grpcPort) }}
{{- end }}

{{/* Every storage replica's own address (the headless Service's pod names), replica 0 first. */}}
{{- define "tapedeck.storageAddrs" -}}
{{- $name := include "tapedeck.component" (dict "root" . "component" "storage") }}
{{- $addrs := list }}
{{- range $i := until (int .Values.storage.replicas) }}
{{- $addrs = append $addrs (printf "%s-%d.%s-headless:%d" $name $i $name (int $.Values.storage.grpcPort)) }}
{{- end }}
{{- join "," $addrs }}
{{- end }}

{{/* Restricted pod security (Pod Security Standards "restricted"). */}}
{{- define "tapedeck.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "tapedeck.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment every Tapedeck container shares. */}}
{{- define "tapedeck.commonEnv" -}}
- name: TAPEDECK_MODE
  value: cluster
- name: TAPEDECK_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: TAPEDECK_SESSION_TTL
  value: {{ .Values.config.sessionTTL | quote }}
- name: TAPEDECK_IDLE_FINALIZE
  value: {{ .Values.config.idleFinalize | quote }}
- name: TAPEDECK_MAX_FRAME_BYTES
  value: {{ .Values.config.maxFrameBytes | int64 | quote }}
- name: TAPEDECK_MAX_SESSION_BYTES
  value: {{ .Values.config.maxSessionBytes | int64 | quote }}
{{- with .Values.webhooks.urls }}
{{- /* Storage keeps the outbox, the api lists who delivers, the operator delivers. */}}
- name: TAPEDECK_WEBHOOK_URL
  value: {{ join "," . | quote }}
{{- end }}
{{- include "tapedeck.objectStoreEnv" . }}
{{- range $name, $value := .Values.config.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* What the processes that reach storage and sign tokens add (ingest, api, operator). */}}
{{- define "tapedeck.clientEnv" -}}
- name: TAPEDECK_STORAGE_ADDR
  value: {{ include "tapedeck.storageAddr" . | quote }}
{{- if gt (int .Values.storage.replicas) 1 }}
- name: TAPEDECK_STORAGE_ADDRS
  value: {{ include "tapedeck.storageAddrs" . | quote }}
{{- end }}
- name: TAPEDECK_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tapedeck.secretName" . }}
      key: secret-key
{{- if and .Values.auth.allowAnonymous .Values.auth.apiToken }}
{{- fail "auth.allowAnonymous is true but auth.apiToken is set: choose one (a token, or none on a trusted network)" }}
{{- end }}
{{- /* The api refuses to start in a cluster without a token unless allowed to (cli.py). */}}
{{- if or (not .Values.auth.allowAnonymous) .Values.auth.existingSecret }}
- name: TAPEDECK_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tapedeck.secretName" . }}
      key: api-token
      optional: {{ .Values.auth.allowAnonymous }}
{{- end }}
{{- if .Values.auth.allowAnonymous }}
- name: TAPEDECK_ALLOW_ANONYMOUS
  value: "true"
{{- end }}
{{- end }}

{{/* The Host names ingest and api answer to (TAPEDECK_ALLOWED_HOSTS; loopback names and IP
  addresses are always allowed, which covers probes and pod-IP clients): the ingress host,
  the Gateway's hostnames, both Services' names in every form a pod may use (`helm test`
  calls the api through its Service), and config.allowedHosts. A leading "*." (a wildcard
  host of an Ingress or HTTPRoute) becomes ".", the services' form for a domain. */}}
{{- define "tapedeck.allowedHosts" -}}
{{- $hosts := list }}
{{- if .Values.ingress.enabled }}
{{- $hosts = append $hosts .Values.ingress.host }}
{{- end }}
{{- if .Values.gateway.enabled }}
{{- $hosts = concat $hosts .Values.gateway.hostnames }}
{{- end }}
{{- $ns := .Release.Namespace }}
{{- range $component := list "api" "ingest" }}
{{- $svc := include "tapedeck.component" (dict "root" $ "component" $component) }}
{{- range $suffix := list "" (printf ".%s" $ns) (printf ".%s.svc" $ns) (printf ".%s.svc.cluster.local" $ns) }}
{{- $hosts = append $hosts (printf "%s%s" $svc $suffix) }}
{{- end }}
{{- end }}
{{- $hosts = concat $hosts .Values.config.allowedHosts }}
{{- $out := list }}
{{- range $hosts }}
{{- $out = append $out (regexReplaceAll "^\\*\\." . ".") }}
{{- end }}
{{- $out | uniq | join "," }}
{{- end }}

{{/* Writable scratch space under a read-only root filesystem. */}}
{{- define "tapedeck.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "tapedeck.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{/* The object tier (TAPEDECK_S3_* and the AWS conventions), when objectStore.bucket is set:
  storage writes the bucket, every other process reads finished recordings from it. */}}
{{- define "tapedeck.objectStoreEnv" -}}
{{- with .Values.objectStore }}
{{- if .bucket }}
- name: TAPEDECK_S3_BUCKET
  value: {{ .bucket | quote }}
- name: TAPEDECK_S3_PREFIX
  value: {{ .prefix | quote }}
{{- if .endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .endpoint | quote }}
{{- end }}
{{- if .publicEndpoint }}
- name: TAPEDECK_S3_PUBLIC_ENDPOINT
  value: {{ .publicEndpoint | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ .region | quote }}
- name: TAPEDECK_S3_ADDRESSING_STYLE
  value: {{ .addressingStyle | quote }}
- name: TAPEDECK_S3_PART_SIZE
  value: {{ .partSize | int64 | quote }}
- name: TAPEDECK_S3_DOWNLOADS
  {{- /* auto: through the store when browsers can reach it (AWS S3, or a publicEndpoint) */}}
  {{- $downloads := .downloads }}
  {{- if eq $downloads "auto" }}
  {{- $downloads = ternary "redirect" "proxy" (or (not .endpoint) (not (empty .publicEndpoint))) }}
  {{- end }}
  value: {{ $downloads | quote }}
- name: TAPEDECK_S3_LIFECYCLE_DAYS
  value: {{ .lifecycleDays | int64 | quote }}
{{- with .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}
{{- end }}
{{- end }}
