#!/usr/bin/env bash
# Renders every overlay (kubectl's built-in kustomize) and validates what it
# renders: yamllint on the sources, then each object against the Kubernetes
# API schemas and this project's deployment rules (validate/check.js, with
# the npm packages pinned in validate/package-lock.json).
# Usage: deploy/k8s/validate.sh [OUT_DIR]   (rendered manifests are left in OUT_DIR)
set -euo pipefail
cd "$(dirname "$0")"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
yamllint -s -c .yamllint .
(cd validate && npm ci --silent --no-audit --no-fund >/dev/null)
rendered=()
for overlay in overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" >"$OUT/$name.yaml" 2>"$OUT/$name.warnings"
  rendered+=("$OUT/$name.yaml")
done
node validate/check.js "${rendered[@]}" monitoring/*.yaml tracing/*.yaml
echo "manifests: overlays $(cd overlays && echo */ | tr -d /) rendered into $OUT"
