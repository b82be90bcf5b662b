{{/*
Names, labels and the pieces every workload shares.
*/}}

{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every resource name; short enough to leave room for "-worker-<region>". */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ include "switchyard.chart" . }}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of every pod of the release (the default-deny NetworkPolicy uses it). */}}
{{- define "switchyard.releaseSelector" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector of one component: (dict "root" $ "component" "control-plane"). */}}
{{- define "switchyard.selector" -}}
{{ include "switchyard.releaseSelector" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference: (dict "root" $ "image" .Values.controlPlane.image). */}}
{{- define "switchyard.image" -}}
{{- $images := .root.Values.images -}}
{{- $repository := ternary (printf "%s/%s" (trimSuffix "/" $images.registry) .image.repository) .image.repository (ne $images.registry "") -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $images.tag) -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.secretName" -}}
{{- default (printf "%s-secrets" (include "switchyard.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Environment variable prefix of a binary. */}}
{{- define "switchyard.envPrefix" -}}
{{- $prefixes := dict "control-plane" "SWITCHYARD_CP_" "worker" "SWITCHYARD_WORKER_" "autoscaler" "SWITCHYARD_AUTOSCALER_" -}}
{{- required (printf "unknown binary %q" .) (get $prefixes .) -}}
{{- end -}}

{{/*
Environment of a binary: its config file, then one variable per secret field, read from
the Secret. (dict "root" $ "binary" "control-plane" "secretName" "...")
The binaries read SWITCHYARD_<PREFIX>CONFIG as their --config file and
<PREFIX><SECTION>__<FIELD> as overrides, so a secret field never needs the file.
*/}}
{{- define "switchyard.env" -}}
{{- $prefix := include "switchyard.envPrefix" .binary -}}
- name: {{ $prefix }}CONFIG
  value: /etc/switchyard/{{ .binary }}.toml
{{- range $field := (index .root.Values.secrets.fields .binary | default list) }}
- name: {{ $prefix }}{{ $field | replace "." "__" | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secretName | default (include "switchyard.secretName" $.root) }}
      key: {{ printf "%s.%s" $.binary $field }}
{{- end }}
{{- end -}}

{{/* The port of a "host:port" listen address. */}}
{{- define "switchyard.port" -}}
{{- $port := . | toString | splitList ":" | last -}}
{{- if not (regexMatch "^[0-9]+$" $port) -}}
{{- fail (printf "cannot read a port from listen address %q" .) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* Volumes shared by every pod: the config file and a writable /tmp. */}}
{{- define "switchyard.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/* The worker pool's effective configuration: (dict "root" $ "region" "us-east-1" "pool" $pool). */}}
{{- define "switchyard.workerConfig" -}}
{{- $base := deepCopy (.root.Values.workers.config | default dict) -}}
{{- $pool := deepCopy (.pool.config | default dict) -}}
{{- $cfg := mergeOverwrite $base $pool -}}
{{- $worker := get $cfg "worker" | default dict -}}
{{- if and (hasKey $worker "region") (ne (toString (get $worker "region")) .region) -}}
{{- fail (printf "workers: worker.region is the pool's key (%s); do not set it in config" .region) -}}
{{- end -}}
{{- $_ := set $worker "region" .region -}}
{{- $_ := set $cfg "worker" $worker -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* Names of the worker Deployments, one per pool, as a JSON list. */}}
{{- define "switchyard.workerDeployments" -}}
{{- $names := list -}}
{{- range $region := keys .Values.workers.pools | sortAlpha -}}
{{- $names = append $names (printf "%s-worker-%s" (include "switchyard.fullname" $) $region) -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The secret fields of a binary, as a list. */}}
{{- define "switchyard.secretFields" -}}
{{- toJson (index .Values.secrets.fields .binary | default list) -}}
{{- end -}}

{{/* The configuration files' contents. */}}
{{- define "switchyard.controlPlaneToml" -}}
# control-plane configuration, rendered by the Helm chart from controlPlane.config.
{{- $secrets := index .Values.secrets.fields "control-plane" | default list }}
{{ include "switchyard.toml" (dict "table" (.Values.controlPlane.config | default dict) "path" "" "parts" list "secrets" $secrets "binary" "control-plane") | trim }}
{{- end -}}

{{- define "switchyard.workerToml" -}}
# worker configuration of the {{ .region }} pool, rendered by the Helm chart from
# workers.config and workers.pools.{{ .region }}.config.
{{- $secrets := index .root.Values.secrets.fields "worker" | default list }}
{{- $cfg := include "switchyard.workerConfig" . | fromJson }}
{{ include "switchyard.toml" (dict "table" $cfg "path" "" "parts" list "secrets" $secrets "binary" "worker") | trim }}
{{- end -}}

{{/*
The autoscaler's effective configuration: autoscaler.config with what it leaves to the
chart filled in: the region (the control plane's), the ops address (autoscaler.port), and
the Kubernetes actuator's namespace (the release's) and Deployment (this release's worker
Deployment of the region, which must exist when the actuator is kubernetes).
*/}}
{{- define "switchyard.autoscalerConfig" -}}
{{- $cfg := deepCopy (.Values.autoscaler.config | default dict) -}}
{{- $region := get $cfg "region" | default dict -}}
{{- if not (get $region "name") -}}
{{- $_ := set $region "name" .Values.controlPlane.config.region.name -}}
{{- end -}}
{{- $_ := set $cfg "region" $region -}}
{{- $ops := get $cfg "ops" | default dict -}}
{{- if not (get $ops "listen") -}}
{{- $_ := set $ops "listen" (printf "0.0.0.0:%v" .Values.autoscaler.port) -}}
{{- end -}}
{{- $_ := set $cfg "ops" $ops -}}
{{- $actuator := get $cfg "actuator" | default dict -}}
{{- $kube := get $actuator "kubernetes" | default dict -}}
{{- if not (get $kube "namespace") -}}
{{- $_ := set $kube "namespace" .Release.Namespace -}}
{{- end -}}
{{- if and (eq (toString (get $actuator "kind")) "kubernetes") (not (get $kube "deployments")) -}}
{{- $pool := toString (get $region "name") -}}
{{- if not (hasKey (.Values.workers.pools | default dict) $pool) -}}
{{- fail (printf "autoscaler: this release has no worker pool of region %s (workers.pools); set autoscaler.config.region.name or actuator.kubernetes.deployments" $pool) -}}
{{- end -}}
{{- $_ := set $kube "deployments" (list (printf "%s-worker-%s" (include "switchyard.fullname" .) $pool)) -}}
{{- end -}}
{{- $_ := set $actuator "kubernetes" $kube -}}
{{- $_ := set $cfg "actuator" $actuator -}}
{{- toJson $cfg -}}
{{- end -}}

{{- define "switchyard.autoscalerToml" -}}
# autoscaler configuration, rendered by the Helm chart from autoscaler.config.
{{- $secrets := index .Values.secrets.fields "autoscaler" | default list }}
{{- $cfg := include "switchyard.autoscalerConfig" . | fromJson }}
{{ include "switchyard.toml" (dict "table" $cfg "path" "" "parts" list "secrets" $secrets "binary" "autoscaler") | trim }}
{{- end -}}

{{/*
The chart-created Secret's data: one key per secret field of every binary. A list is
written in the binaries' inline-array form (JSON string escapes are valid there).
*/}}
{{- define "switchyard.secretData" -}}
{{- $fields := .root.Values.secrets.fields -}}
{{- $values := .root.Values.secrets.values | default dict -}}
{{- $binaries := .binaries | default (keys $fields | sortAlpha) -}}
{{- range $binary := $binaries }}
{{- range $field := index $fields $binary | default list }}
{{- $key := printf "%s.%s" $binary $field }}
{{- if not (hasKey $values $key) }}
{{- fail (printf "secrets.values.%s is required (or name an existing Secret in secrets.existingSecret)" $key) }}
{{- end }}
{{- $v := index $values $key }}
{{ $key }}: {{ ternary (toJson $v) (toString $v) (kindIs "slice" $v) | quote }}
{{- end }}
{{- end }}
{{- end -}}
