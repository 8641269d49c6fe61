{{/* The name of every object: fullnameOverride, else the release name (moorage), else release-moorage. */}}
{{- define "moorage.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "moorage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "moorage.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "moorage.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moorage.labels" -}}
{{ include "moorage.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The activator's pods: labels of their own, so the operator's selector never picks them. */}}
{{- define "moorage.activatorSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-activator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "moorage.activatorLabels" -}}
{{ include "moorage.activatorSelectorLabels" . }}
app.kubernetes.io/component: activator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* repository:tag, or repository@digest when the tag is a digest; a tag typed as a number stays text. */}}
{{- define "moorage.tag" -}}
{{- $tag := toString (default .Chart.AppVersion .Values.image.tag) -}}
{{- if hasPrefix "sha256:" $tag }}@{{ $tag }}{{ else }}:{{ $tag }}{{ end -}}
{{- end -}}

{{- define "moorage.image" -}}
{{- printf "%s%s" .Values.image.repository (include "moorage.tag" .) -}}
{{- end -}}

{{/* The fine-tune image moves with image.tag: <repository>-finetune at the same tag. */}}
{{- define "moorage.finetuneImage" -}}
{{- default (printf "%s-finetune%s" .Values.image.repository (include "moorage.tag" .)) .Values.operator.finetuneImage -}}
{{- end -}}

{{/*
What the operator does in the namespaces it serves (moorage.reconcile): read its models and write their
status; server-side apply (create + patch) its children; delete superseded Jobs and released weights
volumes; read the pods of its Jobs and Deployments; read the hub token Secrets a model names; post Events.
kopf lists and watches every kind it has a handler for. Nothing more: no wildcards, no Secret listing.
*/}}
{{- define "moorage.workloadRules" -}}
- apiGroups: ["moorage.dev"]
  resources: ["opensourcemodels"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["moorage.dev"]
  resources: ["opensourcemodels/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion; where the OwnerReferencesPermissionEnforcement
# admission plugin is on (e.g. OpenShift), setting it needs update on the owner's finalizers.
- apiGroups: ["moorage.dev"]
  resources: ["opensourcemodels/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# A failed rollout is rolled back to the pod template the last Ready revision's ReplicaSet keeps.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.gateway: the model's InferencePool and HTTPRoute, where their CRDs are installed. Whether they are
# is learnt by listing them (the list the watch makes anyway): no access to CRDs beyond kopf's list/watch.
# Never Gateways, ReferenceGrants or anyone's routes but its own (it deletes only those it owns).
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# autoscaling.minReplicas 0: the EndpointSlice that points a model's Service at the activator while no
# replica is ready (deleted once one is); the activator's own slices are read to learn its addresses.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# KEDA's ScaledObject of a model with spec.serving.autoscaling (deleted when autoscaling is turned off).
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The last progress line of a running pull, for status.weights.progress.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
