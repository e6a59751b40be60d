{{/*
Names, labels and the generated material every template shares.
Helpers that need a component take a dict: (dict "ctx" $ "component" "pairing").
*/}}

{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; every resource name starts with it. */}}
{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The control-plane components, each a Deployment and a Service. */}}
{{- define "ferry.controlPlane" -}}
["gateway", "pairing", "catalog", "transfer", "scheduler"]
{{- end }}

{{/* Components with a certificate of their own and a ServiceAccount. */}}
{{- define "ferry.podComponents" -}}
{{- $all := append (include "ferry.controlPlane" . | fromJsonArray) "agent" }}
{{- if .Values.controller.enabled }}
{{- $all = append $all "controller" }}
{{- end }}
{{- toJson $all }}
{{- end }}

{{/* Components that keep state in --data-dir. */}}
{{- define "ferry.stateful" -}}
["pairing", "catalog", "transfer", "scheduler"]
{{- end }}

{{/* Components whose standalone binary takes --cluster-name. */}}
{{- define "ferry.namedCluster" -}}
["pairing", "catalog", "transfer", "scheduler"]
{{- end }}

{{/* `<fullname>-<component>`: the Deployment, Service, ServiceAccount of a component. */}}
{{- define "ferry.componentName" -}}
{{- printf "%s-%s" (include "ferry.fullname" .ctx) .component }}
{{- end }}

{{/* Cluster-scoped objects (ClusterRoles, bindings) also carry the namespace. */}}
{{- define "ferry.clusterScopedName" -}}
{{- printf "%s-%s-%s" .ctx.Release.Namespace (include "ferry.fullname" .ctx) .component }}
{{- end }}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ include "ferry.chart" .ctx }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end }}

{{/* The transfer service's --agent-selector: the agent pods' selector labels. */}}
{{- define "ferry.agentSelector" -}}
{{- $labels := include "ferry.selectorLabels" (dict "ctx" . "component" "agent") | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* The node directories the agent reads and writes under (JSON list): the volume root
and the hostPaths; empty ones left out. (Of the kubelet's directory, --kubelet-root, it
reaches only pods' CSI volume mounts.) */}}
{{- define "ferry.agentRoots" -}}
{{- $v := .Values.agent }}
{{- prepend $v.hostPaths $v.volumeRoot | compact | uniq | toJson }}
{{- end }}

{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The component's port (values `<component>.port`). */}}
{{- define "ferry.port" -}}
{{- (index .ctx.Values .component).port }}
{{- end }}

{{/* `<fullname>-<component>.<namespace>.svc`. */}}
{{- define "ferry.serviceHost" -}}
{{- printf "%s.%s.svc" (include "ferry.componentName" .) .ctx.Release.Namespace }}
{{- end }}

{{- define "ferry.tlsOn" -}}
{{- if ne .Values.tls.mode "mesh" }}true{{ end }}
{{- end }}

{{/* URL a component calls another at: https:// with the chart's TLS, http:// in mesh mode. */}}
{{- define "ferry.endpoint" -}}
{{- $scheme := ternary "https" "http" (eq (include "ferry.tlsOn" .ctx) "true") }}
{{- printf "%s://%s:%s" $scheme (include "ferry.serviceHost" .) (include "ferry.port" .) }}
{{- end }}

{{/* host:port the other cluster's Ferry reaches this cluster's gateway at. */}}
{{- define "ferry.peerEndpoint" -}}
{{- if .Values.peer.endpoint }}
{{- .Values.peer.endpoint }}
{{- else }}
{{- $gw := dict "ctx" . "component" "gateway" }}
{{- printf "%s.%s:%s" (include "ferry.serviceHost" $gw) .Values.clusterDomain (include "ferry.port" $gw) }}
{{- end }}
{{- end }}

{{/* The host part of peer.endpoint ("" when unset): host:port, [v6]:port, or a host. */}}
{{- define "ferry.peerHost" -}}
{{- $e := .Values.peer.endpoint }}
{{- if hasPrefix "[" $e }}
{{- regexReplaceAll "^\\[([^\\]]*)\\].*$" $e "${1}" }}
{{- else }}
{{- regexReplaceAll ":[0-9]+$" $e "" }}
{{- end }}
{{- end }}

{{/* Checks values the schema cannot express. */}}
{{- define "ferry.validate" -}}
{{- if and (eq .Values.tls.mode "existingSecret") (not .Values.tls.existingSecret) }}
{{- fail "tls.mode existingSecret needs tls.existingSecret: the name of a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) in the release namespace" }}
{{- end }}
{{- if and .Values.tls.extraTrustedCA (ne .Values.tls.mode "internal") }}
{{- fail "tls.extraTrustedCA works with tls.mode internal only; with existingSecret, put every CA to trust in the Secret's ca.crt" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: the ServiceMonitor scrapes the metrics port" }}
{{- end }}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.prometheusRule.enabled needs metrics.enabled: its alerts read the metrics the components serve" }}
{{- end }}
{{- if and .Values.gateway.service.nodePort (eq .Values.gateway.service.type "ClusterIP") }}
{{- fail "gateway.service.nodePort needs gateway.service.type NodePort or LoadBalancer" }}
{{- end }}
{{- end }}

{{/*
The internal credential: 48 random characters, made once. An existing Secret's value is
kept (lookup), so upgrades do not change it; without a cluster (helm template) a fresh
one is made. Memoized in .Values so every template of one render sees the same value.
Returns it base64-encoded.
*/}}
{{- define "ferry.internalToken" -}}
{{- if not (hasKey .Values "__ferryInternalToken") }}
{{- $name := printf "%s-internal" (include "ferry.fullname" .) }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- $token := dig "data" "token" "" $existing }}
{{- if not $token }}
{{- $token = randAlphaNum 48 | b64enc }}
{{- end }}
{{- $_ := set .Values "__ferryInternalToken" $token }}
{{- end }}
{{- index .Values "__ferryInternalToken" }}
{{- end }}

{{/* DNS names and IPs of a component's certificate, as {"dns": [...], "ips": [...]}. */}}
{{- define "ferry.sans" -}}
{{- $svc := include "ferry.componentName" . }}
{{- $ns := .ctx.Release.Namespace }}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .ctx.Values.clusterDomain) }}
{{- $ips := list }}
{{- if eq .component "agent" }}
{{- $dns = append $dns (printf "*.%s.%s.svc" $svc $ns) }}
{{- end }}
{{- if eq .component "gateway" }}
{{- $dns = append $dns "localhost" }}
{{- $ips = append $ips "127.0.0.1" }}
{{- $extra := .ctx.Values.gateway.extraSANs }}
{{- $host := include "ferry.peerHost" .ctx }}
{{- if $host }}
{{- $extra = append $extra $host }}
{{- end }}
{{- range $extra }}
{{- if regexMatch "^([0-9]{1,3}\\.){3}[0-9]{1,3}$|:" . }}
{{- $ips = append $ips . }}
{{- else }}
{{- $dns = append $dns . }}
{{- end }}
{{- end }}
{{- end }}
{{- dict "dns" ($dns | uniq) "ips" ($ips | uniq) | toJson }}
{{- end }}

{{/*
tls.mode internal: a CA and one certificate per component (serverAuth and clientAuth),
base64-encoded as Secrets hold them. The CA and each certificate are kept across upgrades
(lookup); a certificate is made again when its names change or the CA is new. Memoized
in .Values: every template of one render sees the same material.
Returns JSON: {"ca": {"crt", "key"}, "certs": {<component>: {"crt", "key", "sans"}}}.
*/}}
{{- define "ferry.tlsMaterial" -}}
{{- if not (hasKey .Values "__ferryTLS") }}
{{- $fullname := include "ferry.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $days := int .Values.tls.validityDays }}
{{- $caSecret := lookup "v1" "Secret" $ns (printf "%s-ca" $fullname) }}
{{- $caCrt := dig "data" "tls.crt" "" $caSecret }}
{{- $caKey := dig "data" "tls.key" "" $caSecret }}
{{- $ca := dict }}
{{- $caFresh := false }}
{{- if and $caCrt $caKey }}
{{- $ca = buildCustomCert $caCrt $caKey }}
{{- else }}
{{- $ca = genCA (printf "%s-ca" $fullname) $days }}
{{- $caFresh = true }}
{{- end }}
{{- $certs := dict }}
{{- range $component := include "ferry.podComponents" . | fromJsonArray }}
{{- $c := dict "ctx" $ "component" $component }}
{{- $sans := include "ferry.sans" $c | fromJson }}
{{- $sum := toJson $sans | sha256sum | trunc 16 }}
{{- $name := printf "%s-tls" (include "ferry.componentName" $c) }}
{{- $existing := lookup "v1" "Secret" $ns $name }}
{{- $crt := dig "data" "tls.crt" "" $existing }}
{{- $key := dig "data" "tls.key" "" $existing }}
{{- $sameNames := eq (dig "metadata" "annotations" "ferry.dev/sans" "" $existing) $sum }}
{{- if or $caFresh (not $sameNames) (not $crt) (not $key) }}
{{- $cert := genSignedCert (include "ferry.componentName" $c) $sans.ips $sans.dns $days $ca }}
{{- $crt = b64enc $cert.Cert }}
{{- $key = b64enc $cert.Key }}
{{- end }}
{{- $_ := set $certs $component (dict "crt" $crt "key" $key "sans" $sum) }}
{{- end }}
{{- $_ := set .Values "__ferryTLS" (dict "ca" (dict "crt" (b64enc $ca.Cert) "key" (b64enc $ca.Key)) "certs" $certs) }}
{{- end }}
{{- index .Values "__ferryTLS" | toJson }}
{{- end }}

{{/* The PEM bundle components trust for their own calls (our CA, tls.extraTrustedCA). */}}
{{- define "ferry.trustBundle" -}}
{{- $tls := include "ferry.tlsMaterial" . | fromJson }}
{{- $ca := b64dec $tls.ca.crt | trim }}
{{- if .Values.tls.extraTrustedCA }}
{{- printf "%s\n%s\n" $ca (trim .Values.tls.extraTrustedCA) }}
{{- else }}
{{- printf "%s\n" $ca }}
{{- end }}
{{- end }}

{{/* Name of the Secret mounted at /etc/ferry/tls; "" in mesh mode. */}}
{{- define "ferry.tlsSecretName" -}}
{{- if eq .ctx.Values.tls.mode "internal" }}
{{- printf "%s-tls" (include "ferry.componentName" .) }}
{{- else if eq .ctx.Values.tls.mode "existingSecret" }}
{{- .ctx.Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/*
The arguments of `ferry service <component>`, as a JSON list: the flags of the standalone
binary of that component.
*/}}
{{- define "ferry.args" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $component := .component }}
{{- $args := list "service" $component (printf "--listen=0.0.0.0:%s" (include "ferry.port" .)) }}
{{- if eq $v.tls.mode "mesh" }}
{{- $args = append $args "--insecure-plaintext" }}
{{- else }}
{{- $args = append $args "--tls-cert=/etc/ferry/tls/tls.crt" }}
{{- $args = append $args "--tls-key=/etc/ferry/tls/tls.key" }}
{{- if or (ne $component "gateway") $v.gateway.requireClientCertificate }}
{{- $args = append $args "--tls-client-ca=/etc/ferry/tls/ca.crt" }}
{{- end }}
{{- if eq $v.tls.mode "internal" }}
{{- $args = append $args "--tls-ca=/etc/ferry/tls/trust.crt" }}
{{- else }}
{{- $args = append $args "--tls-ca=/etc/ferry/tls/ca.crt" }}
{{- end }}
{{- end }}
{{- if ne $component "gateway" }}
{{- /* The gateway holds no credential: it passes each caller's own token on. */}}
{{- $args = append $args "--internal-token-file=/etc/ferry/internal/token" }}
{{- end }}
{{- $args = append $args (printf "--health-listen=0.0.0.0:%d" (int $v.healthPort)) }}
{{- if $v.metrics.enabled }}
{{- $args = append $args (printf "--metrics-listen=0.0.0.0:%d" (int $v.metrics.port)) }}
{{- end }}
{{- if has $component (include "ferry.stateful" $ctx | fromJsonArray) }}
{{- $args = append $args "--data-dir=/var/lib/ferry" }}
{{- end }}
{{- if and $v.clusterName (has $component (include "ferry.namedCluster" $ctx | fromJsonArray)) }}
{{- $args = append $args (printf "--cluster-name=%s" $v.clusterName) }}
{{- end }}
{{- $ep := dict }}
{{- range $other := include "ferry.controlPlane" $ctx | fromJsonArray }}
{{- $_ := set $ep $other (include "ferry.endpoint" (dict "ctx" $ctx "component" $other)) }}
{{- end }}
{{- if eq $component "gateway" }}
{{- $args = append $args (printf "--pairing-endpoint=%s" $ep.pairing) }}
{{- $args = append $args (printf "--catalog-endpoint=%s" $ep.catalog) }}
{{- $args = append $args (printf "--transfer-endpoint=%s" $ep.transfer) }}
{{- $args = append $args (printf "--scheduler-endpoint=%s" $ep.scheduler) }}
{{- else if eq $component "pairing" }}
{{- $args = append $args (printf "--ferry-endpoint=%s" (include "ferry.peerEndpoint" $ctx)) }}
{{- with $v.peer.apiServerURL }}
{{- $args = append $args (printf "--api-server-url=%s" .) }}
{{- end }}
{{- /* What pairing makes in the cluster goes with the release (garbage collection). */}}
{{- $args = append $args (printf "--owner-cluster-role=%s" (include "ferry.clusterScopedName" (dict "ctx" $ctx "component" "pairing"))) }}
{{- /* CheckPair's repository checks ask the catalog about this cluster's profiles. */}}
{{- $args = append $args (printf "--catalog-endpoint=%s" $ep.catalog) }}
{{- $args = append $args (printf "--namespace=%s" $ctx.Release.Namespace) }}
{{- range $v.adminGroups }}
{{- $args = append $args (printf "--admin-group=%s" .) }}
{{- end }}
{{- if $v.pairing.trustSourceIdentities }}
{{- $args = append $args "--trust-source-identities" }}
{{- end }}
{{- else if eq $component "catalog" }}
{{- $args = append $args (printf "--secrets-namespace=%s" $ctx.Release.Namespace) }}
{{- range $v.adminGroups }}
{{- $args = append $args (printf "--admin-group=%s" .) }}
{{- end }}
{{- else if eq $component "transfer" }}
{{- $args = append $args (printf "--pairing-endpoint=%s" $ep.pairing) }}
{{- $args = append $args (printf "--catalog-endpoint=%s" $ep.catalog) }}
{{- $args = append $args (printf "--agent-namespace=%s" $ctx.Release.Namespace) }}
{{- $args = append $args (printf "--agent-selector=%s" (include "ferry.agentSelector" $ctx)) }}
{{- $args = append $args (printf "--agent-port=%d" (int $v.agent.port)) }}
{{- if ne $v.tls.mode "mesh" }}
{{- /* Agents are called at pod IPs, which no certificate names. */}}
{{- $args = append $args (printf "--agent-server-name=%s.%s.svc" (include "ferry.componentName" (dict "ctx" $ctx "component" "agent")) $ctx.Release.Namespace) }}
{{- end }}
{{- with $v.agent.volumeRoot }}
{{- $args = append $args (printf "--volume-root=%s" .) }}
{{- end }}
{{- $args = append $args (printf "--mover-image=%s" (include "ferry.image" $ctx)) }}
{{- $args = append $args (printf "--mover-start-timeout-seconds=%d" (int $v.transfer.moverStartTimeoutSeconds)) }}
{{- range $v.adminGroups }}
{{- $args = append $args (printf "--admin-group=%s" .) }}
{{- end }}
{{- else if eq $component "scheduler" }}
{{- $args = append $args (printf "--transfer-endpoint=%s" $ep.transfer) }}
{{- $args = append $args (printf "--catalog-endpoint=%s" $ep.catalog) }}
{{- else if eq $component "agent" }}
{{- $args = append $args (printf "--catalog-endpoint=%s" $ep.catalog) }}
{{- with $v.agent.volumeRoot }}
{{- $args = append $args (printf "--volume-root=%s" .) }}
{{- end }}
{{- range include "ferry.agentRoots" $ctx | fromJsonArray }}
{{- $args = append $args (printf "--allow-root=%s" .) }}
{{- end }}
{{- with $v.agent.kubeletDir }}
{{- $args = append $args (printf "--kubelet-root=%s" .) }}
{{- end }}
{{- end }}
{{- $args = concat $args (index $v $component).extraArgs }}
{{- toJson $args }}
{{- end }}

{{/*
Checksum of what a component's pod is started with (its flags, the internal credential,
its certificate): a changed value rolls the pods on `helm upgrade`.
*/}}
{{- define "ferry.podChecksum" -}}
{{- $ctx := .ctx }}
{{- $in := dict "args" (include "ferry.args" .) "token" (include "ferry.internalToken" $ctx) "log" (list $ctx.Values.logLevel $ctx.Values.logFormat) }}
{{- if eq $ctx.Values.tls.mode "internal" }}
{{- $tls := include "ferry.tlsMaterial" $ctx | fromJson }}
{{- $_ := set $in "cert" (index $tls.certs .component).crt }}
{{- $_ := set $in "trust" (include "ferry.trustBundle" $ctx) }}
{{- end }}
{{- toJson $in | sha256sum }}
{{- end }}

{{/* Pod annotations: the checksum and podAnnotations. */}}
{{- define "ferry.podAnnotations" -}}
checksum/config: {{ include "ferry.podChecksum" . }}
{{- with .ctx.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every pod has: /tmp, the internal credential, the TLS Secret. */}}
{{- define "ferry.commonVolumes" -}}
- name: tmp
  emptyDir: {}
- name: internal-token
  secret:
    secretName: {{ include "ferry.fullname" .ctx }}-internal
    defaultMode: 0440
    items:
      - key: token
        path: token
{{- with include "ferry.tlsSecretName" . }}
- name: tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "ferry.commonMounts" -}}
- name: tmp
  mountPath: /tmp
- name: internal-token
  mountPath: /etc/ferry/internal
  readOnly: true
{{- if include "ferry.tlsSecretName" . }}
- name: tls
  mountPath: /etc/ferry/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Container ports: grpc, health, and metrics when on. */}}
{{- define "ferry.containerPorts" -}}
- name: grpc
  containerPort: {{ include "ferry.port" . }}
  protocol: TCP
- name: health
  containerPort: {{ .ctx.Values.healthPort }}
  protocol: TCP
{{- if .ctx.Values.metrics.enabled }}
- name: metrics
  containerPort: {{ .ctx.Values.metrics.port }}
  protocol: TCP
{{- end }}
{{- end }}

{{/* The kubelet's native gRPC probes, on the plaintext health port. */}}
{{- define "ferry.probes" -}}
readinessProbe:
  grpc:
    port: {{ .Values.healthPort }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
livenessProbe:
  grpc:
    port: {{ .Values.healthPort }}
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Service ports: grpc, and metrics when on. */}}
{{- define "ferry.servicePorts" -}}
- name: grpc
  port: {{ include "ferry.port" . }}
  targetPort: grpc
  protocol: TCP
  appProtocol: grpc
{{- if and (eq .component "gateway") (ne .ctx.Values.gateway.service.type "ClusterIP") .ctx.Values.gateway.service.nodePort }}
  nodePort: {{ .ctx.Values.gateway.service.nodePort }}
{{- end }}
{{- if .ctx.Values.metrics.enabled }}
- name: metrics
  port: {{ .ctx.Values.metrics.port }}
  targetPort: metrics
  protocol: TCP
  appProtocol: http
{{- end }}
{{- end }}
