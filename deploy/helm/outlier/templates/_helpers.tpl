{{- define "outlier.name" -}}
{{- printf "%s" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "outlier.labels" -}}
app.kubernetes.io/name: outlier
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "outlier.selector" -}}
app.kubernetes.io/name: outlier
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "outlier.image" -}}
{{- printf "%s/outlier-%s:%s" .root.Values.image.registry .component (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* The [kafka] tables of a service's TOML: brokers, the principal (its
password file is the mounted Secret) and the security protocol. */}}
{{- define "outlier.kafkaToml" -}}
{{- $k := .root.Values.kafka -}}
[kafka]
brokers = {{ $k.brokers | quote }}
{{- if .orgTopics }}
org_topics = true
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}

[kafka.sasl]
username = {{ .user | quote }}
password_file = "/etc/outlier/secrets/kafka/password"
mechanism = {{ $k.saslMechanism | quote }}
{{- if $k.caSecret }}
ca = "/etc/outlier/secrets/kafka-ca/ca.pem"
{{- end }}
{{- end }}

[kafka.properties]
"security.protocol" = {{ $k.securityProtocol | quote }}
{{- if and $k.caSecret (eq $k.securityProtocol "SSL") }}
"ssl.ca.location" = "/etc/outlier/secrets/kafka-ca/ca.pem"
{{- end }}
{{- end -}}

{{/* Volumes with the Kafka password and CA of a service. */}}
{{- define "outlier.kafkaVolumes" -}}
- name: kafka-password
  secret:
    secretName: {{ .secret.name }}
    defaultMode: 0400
    items:
      - {key: {{ .secret.key }}, path: password}
{{- if .root.Values.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.caSecret }}
    defaultMode: 0444
    items:
      - {key: ca.pem, path: ca.pem}
{{- end }}
{{- end -}}

{{- define "outlier.kafkaMounts" -}}
- {name: kafka-password, mountPath: /etc/outlier/secrets/kafka, readOnly: true}
{{- if .Values.kafka.caSecret }}
- {name: kafka-ca, mountPath: /etc/outlier/secrets/kafka-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "outlier.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* The securityContext of the unprivileged services. */}}
{{- define "outlier.restricted" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
