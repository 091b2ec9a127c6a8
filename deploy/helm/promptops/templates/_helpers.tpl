{{- define "promptops.labels" -}}
app.kubernetes.io/part-of: promptops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "promptops.secretName" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}promptops-secrets{{- end -}}
{{- end -}}
