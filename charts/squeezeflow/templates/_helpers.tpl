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

{{- define "squeezeflow.mlflow.serviceAccountName" -}}
{{- .Values.mlflow.serviceAccount.name | default (include "squeezeflow.mlflow.fullname" .) -}}
{{- end -}}

{{- define "squeezeflow.mlflow.credentialsSecret" -}}
{{- .Values.mlflow.artifacts.credentialsSecret | default .Values.envSecret.name -}}
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
  name: squeezeflow-runner
  labels:
    {{- include "squeezeflow.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "benchmark" "runner" .bench }}
    {{- toYaml $root.Values.mlflow.networkPolicy.clientLabel | nindent 4 }}
spec:
  serviceAccountName: {{ $r.serviceAccount.name }}
  restartPolicy: Never
  automountServiceAccountToken: true
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
