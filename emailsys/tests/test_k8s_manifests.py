"""deploy/k8s, checked offline: both overlays render, every object is valid against the Kubernetes API schemas that
kubernetes-validate ships (a fixed version, no cluster), and every workload is hardened, probed, sized and given its
Procfile role's command. deploy/systemd: one unit per role that `systemd-analyze verify` accepts.

Rendering: the `kustomize` binary is not installable from PyPI, so `render` below applies the subset of a
kustomization these overlays use (resources, namespace, images, strategic-merge patches by kind and name, where
lists of named items merge by name) and refuses any other field, so an overlay cannot use a feature it ignores.
`kubectl kustomize deploy/k8s/overlays/<name>` gives the same objects where kubectl is installed."""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from emailsys.management.commands.probe import probe_roles
from emailsys.tests.test_deployment_files import (
    ROOT,
    argv,
    option_value,
    procfile_entries,
    readme_env_names,
    settings_env_names,
    worker_queues,
)

K8S = ROOT / "deploy" / "k8s"
SYSTEMD = ROOT / "deploy" / "systemd"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33.0"  # the oldest minor version EKS, GKE and AKS all still support
DEMO_ONLY_ROLES = {"smtp", "moto"}  # the Procfile's development stand-ins: no deployment, no unit
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
QUEUE_DEPTH_METRIC = "emailsys_celery_queue_depth"


# --- Rendering ---------------------------------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def strategic_merge(target: dict, patch: dict) -> None:
    """Kustomize's strategic merge for the shapes used here: maps merge, lists of maps with a `name` merge item by
    item (containers, ports), any other list is replaced."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            strategic_merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and all("name" in item for item in value + current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    strategic_merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: kustomization fields this renderer does not apply: {sorted(unknown)}"
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects.extend(render(path) if path.is_dir() else yaml_documents(path))
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only file patches ({patch})"
        for document in yaml_documents(directory / patch["path"]):
            key = (document["kind"], document["metadata"]["name"])
            matches = [obj for obj in objects if (obj["kind"], obj["metadata"]["name"]) == key]
            assert len(matches) == 1, f"{directory / patch['path']}: patches {key}, which matches {len(matches)}"
            strategic_merge(matches[0], document)
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            obj["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in containers(obj):
                if container["image"].partition(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def program_of(args: list[str]) -> list[str]:
    """What a command line runs, without its host, port and sizing options: `celery -A emailsys worker`,
    `python manage.py sqs_bridge`, `daphne ... emailsys.asgi:application`."""
    if args[0] == "daphne":
        return [args[0], args[-1]]
    return args[:4] if args[0] == "celery" else args[:3]


def deployable_roles() -> dict[str, list[str]]:
    return {name: argv(command) for name, command in procfile_entries().items() if name not in DEMO_ONLY_ROLES}


# --- Kubernetes --------------------------------------------------------------------------------------------------


def test_every_object_is_valid_against_the_kubernetes_schemas(overlay) -> None:
    name, objects = overlay
    assert len(objects) > 15
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert {obj["metadata"]["namespace"] for obj in objects} == {{"dev": "emailsys-dev", "prod": "emailsys"}[name]}
    images = {container["image"] for obj in objects for container in containers(obj)}
    assert images == {f"registry.example.com/emailsys:{'dev' if name == 'dev' else '1.0.0'}"}


def test_the_validator_rejects_a_broken_object() -> None:
    """Guards the check above: a misspelt field and a wrong type are errors, not passes."""
    deployment = copy.deepcopy(by_kind(render(K8S / "base"), "Deployment")["emailsys-beat"])
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(by_kind(render(K8S / "base"), "Deployment")["emailsys-beat"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_pod_is_hardened_sized_and_reads_settings_from_the_configmap_and_secret(overlay) -> None:
    name, objects = overlay
    assert not by_kind(objects, "Secret"), "secrets are created in the cluster, never kept here"
    workloads = [obj for obj in objects if pod_spec(obj) is not None]
    for obj in workloads:
        where, spec = f"{name} {obj['kind']}/{obj['metadata']['name']}", pod_spec(obj)
        assert spec["serviceAccountName"] == "emailsys", where
        assert spec["automountServiceAccountToken"] is False, f"{where}: no Kubernetes API token in our pods"
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for container in containers(obj):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
            assert {"/tmp"} <= {mount["mountPath"] for mount in container["volumeMounts"]}, where
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, where
            if obj["kind"] != "CronJob":  # the health check only asks the web Service: no settings, no Secret
                assert container["envFrom"] == [
                    {"configMapRef": {"name": "emailsys-config"}},
                    {"secretRef": {"name": "emailsys-secrets"}},
                ], where
            assert "env" not in container, f"{where}: settings come from the ConfigMap and the Secret only"
        writable = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]} - {"/tmp"}
        assert writable <= {"/app/var"}, f"{where}: writable besides /tmp and the media volume: {writable}"
        if obj["kind"] == "Deployment":
            assert volumes["var"]["persistentVolumeClaim"]["claimName"] in by_kind(objects, "PersistentVolumeClaim")


def test_configmap_sets_only_documented_settings(overlay) -> None:
    _, objects = overlay
    data = by_kind(objects, "ConfigMap")["emailsys-config"]["data"]
    unread = set(data) - settings_env_names() - {"DJANGO_SETTINGS_MODULE"}
    assert not unread, f"the ConfigMap sets variables nothing reads: {sorted(unread)}"
    assert not set(data) - readme_env_names() - {"DJANGO_SETTINGS_MODULE"}
    assert data["DJANGO_SETTINGS_MODULE"] == "emailsys.settings.production"
    assert "localhost" in data["ALLOWED_HOSTS"].split(","), "the web probes ask for localhost"
    secret_like = {key for key in data if re.search(r"SECRET|PASSWORD|TOKEN|KEYS?$|_URL$|AUTH$", key)}
    assert not secret_like - {"SQS_ENDPOINT_URL"}, f"belong in the Secret: {sorted(secret_like)}"


def test_every_procfile_role_has_a_deployment_running_its_command_and_its_own_probe(overlay) -> None:
    name, objects = overlay
    deployments = by_kind(objects, "Deployment")
    roles = deployable_roles()
    assert set(deployments) == {f"emailsys-{role}" for role in roles}, name
    for role, procfile in roles.items():
        spec = pod_spec(deployments[f"emailsys-{role}"])
        (container,) = spec["containers"]
        command = container["command"]
        assert program_of(command) == program_of(procfile), f"{role}: {command} is not the Procfile's {procfile}"
        if "worker" in procfile:
            assert worker_queues(command) == worker_queues(procfile), role
            assert option_value(command, "-n", "--hostname") == option_value(procfile, "-n", "--hostname"), role
            assert option_value(command, "-P", "--pool") == option_value(procfile, "-P", "--pool"), role
            grace = settings.CELERY_TASK_TIME_LIMIT + 30  # a warm shutdown lets the longest task finish
            assert spec["terminationGracePeriodSeconds"] >= grace, role
        if role == "web":
            assert option_value(command, "-b", "--bind") == "0.0.0.0"  # noqa: S104 - the pod's port, behind its Service
            assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        elif role == "flower":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
        else:
            assert role in probe_roles(), role
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["exec"]["command"] == ["python", "manage.py", "probe", role], role
        if role not in ("flower",):
            (init,) = spec["initContainers"]
            assert "manage.py migrate --check" in init["command"][-1], f"{role} must wait for the migrations"


def test_beat_is_one_replica_recreated_migrations_are_a_job_and_health_is_checked_periodically(overlay) -> None:
    _, objects = overlay
    beat = by_kind(objects, "Deployment")["emailsys-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    (job,) = by_kind(objects, "Job").values()
    (check,) = by_kind(objects, "CronJob").values()
    assert check["spec"]["concurrencyPolicy"] == "Forbid" and "http://emailsys-web/healthz" in str(pod_spec(check))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "manage.py",
        "migrate",
        "--noinput",
    ]


def test_sending_and_inbound_pools_scale_on_their_queue_depth(overlay) -> None:
    _, objects = overlay
    from emailsys import metrics

    assert f'"{QUEUE_DEPTH_METRIC}"' in Path(metrics.__file__).read_text(), "the gauge the adapter serves"
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    deployments = by_kind(objects, "Deployment")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas.values()} == {
        "emailsys-worker-sending",
        "emailsys-worker-inbound",
    }
    for hpa in hpas.values():
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "the HPA owns replicas; an apply must not reset them"
        (metric,) = hpa["spec"]["metrics"]
        pool = target["metadata"]["name"].removeprefix("emailsys-worker-")
        assert metric["external"]["metric"] == {
            "name": QUEUE_DEPTH_METRIC,
            "selector": {"matchLabels": {"queue": pool}},
        }
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert QUEUE_DEPTH_METRIC in (K8S / "README.md").read_text(), "the adapter rule is documented"


def test_service_account_uses_irsa_and_only_web_and_flower_take_connections(overlay) -> None:
    name, objects = overlay
    (account,) = by_kind(objects, "ServiceAccount").values()
    arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/emailsys-" + name, arn), arn
    policies = by_kind(objects, "NetworkPolicy")
    default = policies["emailsys-default"]["spec"]
    assert default["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "emailsys"}}
    assert default["ingress"] == [] and set(default["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {port["port"] for rule in default["egress"] for port in rule["ports"]}
    assert {53, 5432, 6379, 5672, 587, 443} <= egress_ports
    ingress = {
        policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): [
            port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]
        ]
        for policy_name, policy in policies.items()
        if policy_name != "emailsys-default"
    }
    assert ingress == {"web": [8000], "flower": [5555]}


def test_the_renderer_refuses_what_it_ignores_and_agrees_with_kubectl_kustomize(tmp_path) -> None:
    """The hand renderer's contract: a kustomization field it does not apply is an error (so no overlay silently
    loses one), and on machines with kubectl (no cluster needed) it gives exactly `kubectl kustomize`'s objects."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [str(K8S / "base")], "commonLabels": {"team": "mail"}})
    )
    with pytest.raises(AssertionError, match=r"does not apply: \['commonLabels'\]"):
        render(tmp_path)
    if kubectl := shutil.which("kubectl"):
        for name in OVERLAYS:
            out = subprocess.run(
                [kubectl, "kustomize", str(K8S / "overlays" / name)], capture_output=True, text=True, check=True
            ).stdout
            theirs = [doc for doc in yaml.safe_load_all(out) if doc]
            key = lambda obj: (obj["kind"], obj["metadata"]["name"])  # noqa: E731
            assert sorted(render(K8S / "overlays" / name), key=key) == sorted(theirs, key=key), name
