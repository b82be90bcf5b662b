{{/*
A TOML writer for the binaries' configuration files.

Helm's own toToml writes every number that came from a values file as a float
(1048576 becomes 1.048576e+06), which the binaries refuse for integer fields. This writer
prints whole numbers as integers (TOML integers are accepted for float fields too), leaves
out null values (so the compiled-in default applies), and refuses a secret field:

  include "switchyard.toml" (dict "table" $config "path" "" "parts" list "secrets" $secretFields "binary" "worker")
*/}}

{{- define "switchyard.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.toml.value" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- printf "%t" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if and (eq (floor .) (float64 .)) (lt (float64 .) 9007199254740992.0) (gt (float64 .) -9007199254740992.0) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- printf "%v" . -}}
{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) -}}
{{- printf "%d" . -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range $item := . -}}
{{- $items = append $items (include "switchyard.toml.value" $item) -}}
{{- end -}}
{{- printf "[%s]" (join ", " $items) -}}
{{- else if kindIs "map" . -}}
{{- $pairs := list -}}
{{- $m := . -}}
{{- range $k := keys $m | sortAlpha -}}
{{- $v := index $m $k -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $pairs = append $pairs (printf "%s = %s" (include "switchyard.toml.key" $k) (include "switchyard.toml.value" $v)) -}}
{{- end -}}
{{- end -}}
{{- printf "{ %s }" (join ", " $pairs) -}}
{{- else -}}
{{- fail (printf "cannot write %v (%s) as TOML" . (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.toml" -}}
{{- $table := .table -}}
{{- $ctx := . -}}
{{- range $k := keys $table | sortAlpha -}}
{{- $v := index $table $k -}}
{{- $path := ternary $k (printf "%s.%s" $ctx.path $k) (eq $ctx.path "") -}}
{{- if and (has $path $ctx.secrets) (not (kindIs "invalid" $v)) -}}
{{- fail (printf "%s: %s is a secret field; set it in secrets.values (or the existing Secret) as %s.%s, not in config" $ctx.binary $path $ctx.binary $path) -}}
{{- end -}}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "switchyard.toml.key" $k }} = {{ include "switchyard.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k := keys $table | sortAlpha -}}
{{- $v := index $table $k -}}
{{- if kindIs "map" $v -}}
{{- $path := ternary $k (printf "%s.%s" $ctx.path $k) (eq $ctx.path "") -}}
{{- $parts := append $ctx.parts $k -}}
{{- $header := list -}}
{{- range $part := $parts -}}
{{- $header = append $header (include "switchyard.toml.key" $part) -}}
{{- end }}

[{{ join "." $header }}]
{{- include "switchyard.toml" (dict "table" $v "path" $path "parts" $parts "secrets" $ctx.secrets "binary" $ctx.binary) -}}
{{- end -}}
{{- end -}}
{{- end -}}
