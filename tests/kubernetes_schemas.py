"""Checks what `visitcounter render` prints, and the committed CRD, against
Kubernetes' own OpenAPI schemas (kubernetes-validate), in strict mode: an
unknown or misspelled field fails.

A deliberately broken StatefulSet is checked too and must fail, so this check
cannot pass by accepting everything.

Usage: python tests/kubernetes_schemas.py PATH_TO_VISITCOUNTER_BINARY
"""

import pathlib
import subprocess
import sys

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"  # the oldest version the operator supports
ROOT = pathlib.Path(__file__).resolve().parent.parent


def check(label, document):
    """Validates one object; returns None when valid, else the error."""
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        return None
    except kubernetes_validate.ValidationError as error:
        return f"{label}: {error.message} (at {'/'.join(map(str, error.path))})"
    except kubernetes_validate.SchemaNotFoundError as error:
        return f"{label}: no schema: {error}"


def main(binary):
    passed, failed = 0, []
    apps = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "kind: VisitCounterApp" in p.read_text())
    if not apps:
        failed.append("no example apps found under examples/")
    for example in apps:
        rendered = subprocess.run([binary, "render", "-f", str(example)], check=True, capture_output=True, text=True)
        for document in yaml.safe_load_all(rendered.stdout):
            label = f"{example.name}: {document['kind']}/{document['metadata']['name']}"
            error = check(label, document)
            if error:
                failed.append(error)
            else:
                passed += 1
    for document in yaml.safe_load_all((ROOT / "crds" / "visitcounterapp.yaml").read_text()):
        error = check("crds/visitcounterapp.yaml", document)
        if error:
            failed.append(error)
        else:
            passed += 1

    # Negative control: a misspelled StatefulSet field must be refused.
    control = yaml.safe_load(
        subprocess.run(
            [binary, "render", "-f", str(ROOT / "examples" / "minimal.yaml")], check=True, capture_output=True, text=True
        ).stdout.split("\n---\n")[-1]
    )
    control["spec"]["serviceNme"] = control["spec"].pop("serviceName")
    if check("control", control) is None:
        failed.append("negative control: a StatefulSet with spec.serviceNme was accepted")
    else:
        passed += 1

    for error in failed:
        print(f"FAILED {error}")
    print(f"kubernetes-schemas: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
