{{/* Names, labels and shared snippets. */}}

{{- define "squeezeflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "squeezeflow.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "squeezeflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "squeezeflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "squeezeflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "squeezeflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "squeezeflow.mlflow.image" -}}
{{- $repo := .Values.mlflow.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.mlflow.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* The runner's objects (its ConfigMap, its service account by default, its pods' name prefix). */}}
{{- define "squeezeflow.runner.fullname" -}}
{{- printf "%s-runner" (include "squeezeflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-prefixed by default, so that two releases in one namespace do not share (or fight over) it. */}}
{{- define "squeezeflow.runner.serviceAccountName" -}}
{{- .Values.runner.serviceAccount.name | default (include "squeezeflow.runner.fullname" .) -}}
{{- end -}}

{{- define "squeezeflow.mlflow.serviceAccountName" -}}
{{- .Values.mlflow.serviceAccount.name | default (include "squeezeflow.mlflow.fullname" .) -}}
{{- end -}}

{{- define "squeezeflow.mlflow.credentialsSecret" -}}
{{- .Values.mlflow.artifacts.credentialsSecret | default .Values.envSecret.name -}}
{{- end -}}

{{/* A PostgreSQL URI on the backend store's server for database `.database`: no credentials (libpq reads
PGUSER/PGPASSWORD), the SSL mode in the URI. The driver is explicit because SQLAlchemy 2.1 made psycopg (3)
the default for postgresql://. */}}
{{- define "squeezeflow.mlflow.databaseUri" -}}
{{- $b := .root.Values.mlflow.backendStore -}}
{{- printf "postgresql+psycopg2://%s:%d/%s?sslmode=%s" $b.host (int $b.port) .database $b.sslmode -}}
{{- end -}}

{{- define "squeezeflow.mlflow.authConfig" -}}
{{- $a := .Values.mlflow.auth -}}
{{- $db := $a.database | default .Values.mlflow.backendStore.database -}}
# MLflow's basic-auth app (rendered by the squeezeflow chart). The admin user's name and password come
# from the environment (MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, from a Secret), never
# from this file.
[mlflow]
default_permission = {{ $a.defaultPermission }}
database_uri = {{ include "squeezeflow.mlflow.databaseUri" (dict "root" . "database" $db) }}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
{{- end -}}

{{/* The in-cluster tracking URI of the chart's MLflow. */}}
{{- define "squeezeflow.mlflow.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "squeezeflow.mlflow.fullname" .) .Release.Namespace (int .Values.mlflow.service.port) -}}
{{- end -}}

{{- define "squeezeflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "squeezeflow.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The runner's pod template (a Pod manifest); `bench` true for the benchmark variant. */}}
{{- define "squeezeflow.runnerPod" -}}
{{- $root := .root -}}
{{- $r := $root.Values.runner -}}
{{- $resources := ternary $r.benchmark.resources $r.resources .bench -}}
{{- $nodeSelector := ternary (merge (deepCopy $r.benchmark.nodeSelector) $r.nodeSelector) $r.nodeSelector .bench -}}
{{- $tolerations := ternary (concat $r.tolerations $r.benchmark.tolerations) $r.tolerations .bench -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "squeezeflow.runner.fullname" $root }}
  labels:
    {{- include "squeezeflow.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "benchmark" "runner" .bench }}
    {{- toYaml $root.Values.mlflow.networkPolicy.clientLabel | nindent 4 }}
spec:
  serviceAccountName: {{ include "squeezeflow.runner.serviceAccountName" $root }}
  restartPolicy: Never
  automountServiceAccountToken: {{ $r.automountServiceAccountToken }}
  securityContext:
    {{- include "squeezeflow.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: base
      image: {{ include "squeezeflow.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["squeezeflow"]
      args: ["--help"]
      envFrom:
        - secretRef:
            name: {{ $root.Values.envSecret.name }}
      env:
        - name: HOME
          value: /tmp
        - name: SQUEEZEFLOW_HOME
          value: /var/lib/squeezeflow
        - name: SQUEEZEFLOW_WORKDIR
          value: /var/lib/squeezeflow/work
        - name: AWS_REQUEST_CHECKSUM_CALCULATION
          value: when_required
        - name: AWS_RESPONSE_CHECKSUM_VALIDATION
          value: when_required
        {{- with $r.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        {{- include "squeezeflow.containerSecurityContext" $root | nindent 8 }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: work
          mountPath: /var/lib/squeezeflow
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    - name: work
      emptyDir:
        sizeLimit: {{ $r.workdirSizeLimit }}
{{- end -}}
