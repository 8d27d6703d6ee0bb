{{/* The chart name, or nameOverride. */}}
{{- define "fedns.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the objects: fullnameOverride, else the release name plus the chart name. */}}
{{- define "fedns.fullname" -}}
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

{{/* Labels that select the fedns pods (stable across upgrades). */}}
{{- define "fedns.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedns.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dns
{{- end }}

{{/* Labels of every object. */}}
{{- define "fedns.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "fedns.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedns
{{- end }}

{{/* The ServiceAccount fedns runs as. */}}
{{- define "fedns.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fedns.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the TSIG secrets: tsig.existingSecret, else the one the chart creates. */}}
{{- define "fedns.tsigSecretName" -}}
{{- if .Values.tsig.existingSecret }}
{{- .Values.tsig.existingSecret }}
{{- else }}
{{- printf "%s-tsig" (include "fedns.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
