#!/usr/bin/env bash
# Validates the Kubernetes manifests against the Kubernetes API schemas
# (PyPI's kubernetes-validate, strict: unknown fields are errors), and checks
# that the kustomize and Helm files are well-formed YAML referring to files
# that exist. Rendering the overlays and the chart needs kubectl/helm, which
# this machine does not have.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/validate-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' 'pyyaml>=6'
fi

"$venv/bin/kubernetes-validate" --strict --quiet -k 1.30 \
    deploy/k8s/base/config.yaml deploy/k8s/base/nats.yaml deploy/k8s/base/postgres.yaml \
    deploy/k8s/base/gateway.yaml deploy/k8s/base/prompts.yaml deploy/k8s/base/execution.yaml \
    deploy/k8s/base/evaluation.yaml deploy/k8s/base/billing.yaml deploy/k8s/base/audit.yaml \
    deploy/k8s/overlays/dev/namespace.yaml deploy/k8s/overlays/production/namespace.yaml

"$venv/bin/python" - <<'PY'
import pathlib, sys, yaml

errors = []
for kustomization in pathlib.Path("deploy/k8s").rglob("kustomization.yaml"):
    doc = yaml.safe_load(kustomization.read_text())
    for resource in doc.get("resources", []):
        if not (kustomization.parent / resource).exists():
            errors.append(f"{kustomization}: resource {resource} does not exist")
    for patch in doc.get("patches", []):
        body = patch.get("patch", "")
        try:
            yaml.safe_load(body)
        except yaml.YAMLError as e:
            errors.append(f"{kustomization}: a patch is not YAML: {e}")

chart = pathlib.Path("deploy/helm/promptops")
meta = yaml.safe_load((chart / "Chart.yaml").read_text())
values = yaml.safe_load((chart / "values.yaml").read_text())
if meta.get("apiVersion") != "v2" or not meta.get("name"):
    errors.append("Chart.yaml: apiVersion v2 and a name are required")
base_ports = {}
for name in ["gateway", "prompts", "execution", "evaluation", "billing", "audit"]:
    doc = list(yaml.safe_load_all(pathlib.Path(f"deploy/k8s/base/{name}.yaml").read_text()))[0]
    base_ports[name] = doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
chart_ports = {name: svc["port"] for name, svc in values["services"].items()}
if chart_ports != base_ports:
    errors.append(f"Helm values ports {chart_ports} differ from the kustomize base {base_ports}")

for e in errors:
    print("ERROR", e)
sys.exit(1 if errors else 0)
PY
echo "manifests valid"
