{{/* Names, labels and shared values. Slots for the distributor and node agent use these too. */}}

{{- define "palisade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "palisade.fullname" -}}
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

{{- define "palisade.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "palisade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: palisade
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" . "component" "injector"). */}}
{{- define "palisade.selectorLabels" -}}
app.kubernetes.io/name: {{ include "palisade.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "palisade.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "palisade.sidecarImage" -}}
{{- default (include "palisade.image" .) .Values.sidecar.image -}}
{{- end -}}

{{- define "palisade.injector.name" -}}
{{- printf "%s-injector" (include "palisade.fullname" .) -}}
{{- end -}}

{{- define "palisade.injector.tlsSecret" -}}
{{- printf "%s-injector-tls" (include "palisade.fullname" .) -}}
{{- end -}}

{{- define "palisade.distributor.name" -}}
{{- printf "%s-distributor" (include "palisade.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the distributor's admin bearer token: the one named in
values, else the one this chart generates (templates/distributor-admin-token.yaml). */}}
{{- define "palisade.distributor.adminSecret" -}}
{{- .Values.distributor.adminTokenSecret | default (printf "%s-admin" (include "palisade.distributor.name" .)) -}}
{{- end -}}

{{/* The Secret holding the bundle-signing key: the one named in values, else the
empty one this chart creates and the distributor fills (templates/distributor-keys.yaml). */}}
{{- define "palisade.distributor.signingSecret" -}}
{{- .Values.distributor.signingKeySecret | default (printf "%s-signing" (include "palisade.distributor.name" .)) -}}
{{- end -}}

{{/* The ConfigMap the distributor publishes its public signing key(s) in (keys.pem). */}}
{{- define "palisade.trustConfigMap" -}}
{{- printf "%s-trust" (include "palisade.fullname" .) -}}
{{- end -}}

{{/* The ConfigMap the injector watches and the node agents mount for the bundle
keys: distributor.publicKeysConfigMap.name, else the trust ConfigMap when the
distributor runs here; empty when there is none. */}}
{{- define "palisade.keysConfigMap" -}}
{{- if .Values.distributor.publicKeysConfigMap.name -}}
{{- .Values.distributor.publicKeysConfigMap.name -}}
{{- else if .Values.distributor.enabled -}}
{{- include "palisade.trustConfigMap" . -}}
{{- end -}}
{{- end -}}

{{/* That ConfigMap's data key. */}}
{{- define "palisade.keysConfigMapKey" -}}
{{- if .Values.distributor.publicKeysConfigMap.name -}}
{{- .Values.distributor.publicKeysConfigMap.key -}}
{{- else -}}
keys.pem
{{- end -}}
{{- end -}}

{{/* The starter bundle (templates/starter-bundle.yaml, or a file in files mode). */}}
{{- define "palisade.starterBundle.name" -}}
{{- printf "%s-starter" (include "palisade.fullname" .) | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "palisade.starterBundle.spec" -}}
# No match: deny. No servers, no rules: every tools/call is denied until your own
# bundles register servers and allow tools.
defaultDecision: deny
{{- end -}}

{{- define "palisade.nodeagent.name" -}}
{{- printf "%s-nodeagent" (include "palisade.fullname" .) -}}
{{- end -}}

{{/* The distributor address handed to sidecars; empty when there is none. */}}
{{- define "palisade.distributor.address" -}}
{{- if .Values.distributor.address -}}
{{- .Values.distributor.address -}}
{{- else if .Values.distributor.enabled -}}
{{- printf "%s.%s.svc:%v" (include "palisade.distributor.name" .) .Release.Namespace .Values.distributor.grpcPort -}}
{{- end -}}
{{- end -}}

{{/* Restricted pod and container security contexts (Pod Security Standard "restricted").
     global.openshift: no fixed UID, GID or fsGroup (the restricted-v2 SCC assigns them). */}}
{{- define "palisade.podSecurityContext" -}}
runAsNonRoot: true
{{- if not (and .Values.global .Values.global.openshift) }}
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "palisade.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Namespaces the webhook never sees. */}}
{{- define "palisade.injector.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- range .Values.injector.excludeNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- toJson (uniq $ns) -}}
{{- end -}}

{{/* A list of words as one shell-quoted string (the schema forbids single quotes in them). */}}
{{- define "palisade.shellWords" -}}
{{- $words := list -}}
{{- range . }}{{ $words = append $words (squote .) }}{{ end -}}
{{- join " " $words -}}
{{- end -}}

{{/* A default (YAML text) with a component's overrides merged over it:
     include with (dict "base" (include "..." .) "over" $values.securityContext). */}}
{{- define "palisade.merged" -}}
{{- $base := .base | fromYaml | default dict -}}
{{- toYaml (mergeOverwrite $base (deepCopy (.over | default dict))) -}}
{{- end -}}
