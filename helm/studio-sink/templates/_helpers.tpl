{{/*
Chart name, truncated to 63 chars (DNS label).
*/}}
{{- define "studio-sink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 52 chars so that suffixes like "-migrate"
and the CronJob's job names still fit in 63.
*/}}
{{- define "studio-sink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "studio-sink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (no component).
*/}}
{{- define "studio-sink.labels" -}}
helm.sh/chart: {{ include "studio-sink.chart" . }}
{{ include "studio-sink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: studio-sink
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "studio-sink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "studio-sink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector of the webhook server pods. The component keeps migration and maintenance
pods out of the Service, the PDB and the ServiceMonitor.
*/}}
{{- define "studio-sink.serverSelectorLabels" -}}
{{ include "studio-sink.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "studio-sink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "studio-sink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "studio-sink.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
SINK_PUBLIC_URL: config.publicUrl, else https://<first ingress host>/events.
Empty when neither is known.
*/}}
{{- define "studio-sink.publicUrl" -}}
{{- if .Values.config.publicUrl }}
{{- .Values.config.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- printf "https://%s/events" (first .Values.ingress.hosts).host }}
{{- end }}
{{- end }}

{{/*
Where each secret comes from, as JSON: {"items": [{env, key, secretName, source,
optional, value}]}. source is "existing" (its own existingSecret), "global" (the
top-level existingSecret) or "chart" (the chart's Secret; only these carry a value).
Only templates that render Secrets may use `value`.
*/}}
{{- define "studio-sink.secretSources" -}}
{{- $v := .Values }}
{{- $fullname := include "studio-sink.fullname" . }}
{{- $authToken := $v.twilio.authToken.value }}
{{- if kindIs "slice" $authToken }}
{{- $authToken = join "," $authToken }}
{{- end }}
{{- $entries := list
  (dict "env" "SINK_DATABASE_URL" "value" $v.database.url "existingSecret" $v.database.existingSecret "key" $v.database.existingSecretKey "required" true)
  (dict "env" "SINK_TWILIO_AUTH_TOKEN" "value" $authToken "existingSecret" $v.twilio.authToken.existingSecret "key" $v.twilio.authToken.existingSecretKey "required" false)
  (dict "env" "SINK_TWILIO_API_KEY_SID" "value" $v.twilio.apiKeySid.value "existingSecret" $v.twilio.apiKeySid.existingSecret "key" $v.twilio.apiKeySid.existingSecretKey "required" false)
  (dict "env" "SINK_TWILIO_API_KEY_SECRET" "value" $v.twilio.apiKeySecret.value "existingSecret" $v.twilio.apiKeySecret.existingSecret "key" $v.twilio.apiKeySecret.existingSecretKey "required" false)
  (dict "env" "SINK_ADMIN_TOKEN" "value" $v.adminToken.value "existingSecret" $v.adminToken.existingSecret "key" $v.adminToken.existingSecretKey "required" false)
}}
{{- $items := list }}
{{- range $entries }}
{{- if .existingSecret }}
{{- $items = append $items (dict "env" .env "key" .key "secretName" .existingSecret "source" "existing" "optional" false) }}
{{- else if $v.existingSecret }}
{{- $items = append $items (dict "env" .env "key" .key "secretName" $v.existingSecret "source" "global" "optional" (not .required)) }}
{{- else if .value }}
{{- $items = append $items (dict "env" .env "key" .key "secretName" $fullname "source" "chart" "optional" false "value" .value) }}
{{- end }}
{{- end }}
{{- dict "items" $items | toJson }}
{{- end }}

{{/*
Fail early, with the fix in the message, on values that would deploy a broken release.
*/}}
{{- define "studio-sink.validate" -}}
{{- $db := .Values.database }}
{{- if not (or $db.url $db.existingSecret .Values.existingSecret) }}
{{- fail "studio-sink: no database configured. Set database.url (stored in a Secret the chart creates), or database.existingSecret + database.existingSecretKey, or the top-level existingSecret holding the key database.existingSecretKey." }}
{{- end }}
{{- $needed := add .Values.shutdownGraceSeconds .Values.preStopSleepSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "studio-sink: terminationGracePeriodSeconds (%d) must be greater than shutdownGraceSeconds + preStopSleepSeconds (%d), or Kubernetes kills the server while it drains. Raise terminationGracePeriodSeconds." (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}

{{/*
Env vars taken from Secrets (server and CronJob).
*/}}
{{- define "studio-sink.secretEnv" -}}
{{- range (include "studio-sink.secretSources" . | fromJson).items }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/*
The /tmp emptyDir (the root filesystem is read-only).
*/}}
{{- define "studio-sink.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "studio-sink.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Pod spec fields shared by the server, the migration Job and the CronJob.
*/}}
{{- define "studio-sink.podCommon" -}}
# No SERVICE_* env vars: a Service named "sink" would inject SINK_PORT=tcp://...
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
A scalar as an env-var string. Helm reads numbers as float64, and large ones would
print as 1.048576e+06: whole numbers are printed as integers.
*/}}
{{- define "studio-sink.str" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
The accounts file (SINK_ACCOUNTS_FILE): the Secret that holds it, or empty when none is
configured. accountsFile.existingSecret first, else the chart's own Secret holding
accountsFile.value.
*/}}
{{- define "studio-sink.accountsSecret" -}}
{{- if .Values.accountsFile.existingSecret }}
{{- .Values.accountsFile.existingSecret }}
{{- else if .Values.accountsFile.value }}
{{- printf "%s-accounts" (include "studio-sink.fullname" .) }}
{{- end }}
{{- end }}

{{- define "studio-sink.accountsPath" -}}
{{- printf "%s/accounts.toml" (trimSuffix "/" .Values.accountsFile.mountPath) }}
{{- end }}

{{/*
Env, mounts and volumes of every pod that runs the sink's settings: the server, the
maintenance CronJob and the `helm test` Pod. The accounts file is a Secret mounted as a
directory (not subPath), so that Kubernetes updates it in place and the sink reloads it.
*/}}
{{- define "studio-sink.envFrom" -}}
- configMapRef:
    name: {{ include "studio-sink.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "studio-sink.env" -}}
{{ include "studio-sink.secretEnv" . | trim }}
{{- if include "studio-sink.accountsSecret" . }}
- name: SINK_ACCOUNTS_FILE
  value: {{ include "studio-sink.accountsPath" . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "studio-sink.volumeMounts" -}}
{{ include "studio-sink.tmpVolumeMount" . }}
{{- if include "studio-sink.accountsSecret" . }}
- name: accounts
  mountPath: {{ trimSuffix "/" .Values.accountsFile.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "studio-sink.volumes" -}}
{{ include "studio-sink.tmpVolume" . }}
{{- with include "studio-sink.accountsSecret" . }}
- name: accounts
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.accountsFile.existingSecretKey }}
        path: accounts.toml
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
