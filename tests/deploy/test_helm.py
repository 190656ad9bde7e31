"""The Helm chart: lint, render, validate every manifest, and check what must hold.

Offline: helm-python-sdk renders with Helm 4's own engine (no helm binary, no cluster),
kubernetes-validate checks each object against the Kubernetes OpenAPI schemas in strict
mode (unknown fields fail).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip(
    "helm_python", reason="needs helm-python-sdk (pip install helm-python-sdk)"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (pip install kubernetes-validate)"
)
yaml = pytest.importorskip("yaml", reason="needs PyYAML")

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "studio-sink"
DASHBOARD = CHART_DIR / "dashboards" / "studio-sink.json"
FULL_VALUES_FILE = Path(__file__).with_name("values-full.yaml")

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one Helm 4.2
# assumes when rendering offline; kubernetes-validate ships schemas for both.
KUBE_VERSIONS = ("1.30.0", "1.36.0")
RELEASE = "sink"
NAMESPACE = "studio"
POD_UID = 10001

# Fake, distinctive secret values: none may appear outside a Secret.
DB_URL = "postgresql://sink:fake-db-password-4c9e1b@db.example.com:5432/sink"
AUTH_TOKENS = ["fake-primary-auth-token-5b1e0c", "fake-secondary-auth-token-9d4f2a"]
API_KEY_SID = "SKfake0api0key0sid0000000000003c7d"
API_KEY_SECRET = "fake-api-key-secret-a71f03"
ADMIN_TOKEN = "fake-admin-token-e8a2d6"
ACCOUNTS_TOKEN = "fake-accounts-file-token-2b7e41"
ACCOUNTS_TOML = (
    "[accounts.AC0123456789abcdef0123456789abcdef]\n"
    'label = "acme-prod"\n'
    f'auth_tokens = ["{ACCOUNTS_TOKEN}"]\n'
)

MINIMAL_VALUES: dict[str, Any] = {"database": {"url": DB_URL}}
CHART_SECRETS_VALUES: dict[str, Any] = {
    "database": {"url": DB_URL},
    "twilio": {
        "authToken": {"value": AUTH_TOKENS},
        "apiKeySid": {"value": API_KEY_SID},
        "apiKeySecret": {"value": API_KEY_SECRET},
    },
    "adminToken": {"value": ADMIN_TOKEN},
    "maintainCronJob": {"enabled": True},
}
GLOBAL_SECRET_VALUES: dict[str, Any] = {
    "existingSecret": "sink-credentials",
    "maintainCronJob": {"enabled": True},
}
ACCOUNTS_FILE_VALUES: dict[str, Any] = {
    "database": {"url": DB_URL},
    "accountsFile": {"value": ACCOUNTS_TOML},
    "maintainCronJob": {"enabled": True},
}
FAKE_SECRETS = [
    DB_URL,
    *AUTH_TOKENS,
    API_KEY_SID,
    API_KEY_SECRET,
    ADMIN_TOKEN,
    ACCOUNTS_TOKEN,
    ACCOUNTS_TOML,
]

POD_KINDS = ("Deployment", "Job", "CronJob", "Pod")
METRICS = (
    "sink_deliveries_total",
    "sink_events_total",
    "sink_signature_failures_total",
    "sink_batch_size",
    "sink_commit_seconds",
    "sink_delivery_seconds",
    "sink_db_pool_in_use",
    "sink_backfill_queue_depth",
    "sink_backfill_items_total",
    "sink_studio_api_calls_total",
    "sink_studio_api_retries_total",
)
HISTOGRAMS = ("sink_batch_size", "sink_commit_seconds", "sink_delivery_seconds")
STUDIO_EVENT_TYPES = (
    "com.twilio.studio.flow.execution.started",
    "com.twilio.studio.flow.execution.ended",
    "com.twilio.studio.flow.step.ended",
)


def full_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(FULL_VALUES_FILE.read_text())
    return values


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "minimal": lambda: MINIMAL_VALUES,
    "chart-secrets": lambda: CHART_SECRETS_VALUES,
    "global-existing-secret": lambda: GLOBAL_SECRET_VALUES,
    "accounts-file": lambda: ACCOUNTS_FILE_VALUES,
    "full": full_values,
}


# --- helpers -----------------------------------------------------------------------


class Rendered:
    """One render of the chart: the objects (with the template they came from) and NOTES."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = ""
        self.objects: list[tuple[str, dict[str, Any]]] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append((template, doc))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for _, obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
        return found[0]

    def configmap_data(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", "studio-sink")["data"]
        return data


def render(values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(CHART_DIR) as chart:
        return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload, the `helm test` Pod included."""
    for kind in POD_KINDS:
        for obj in rendered.of_kind(kind):
            spec = obj["spec"]
            if kind == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            pod = spec if kind == "Pod" else spec["template"]["spec"]
            yield f"{kind}/{obj['metadata']['name']}", pod


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module", params=list(SCENARIOS), ids=list(SCENARIOS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(SCENARIOS[request.param]())


@pytest.fixture(scope="module")
def full() -> Rendered:
    return render(full_values())


# --- lint and schema-validate --------------------------------------------------------


LINT_SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {"defaults": dict, **SCENARIOS}


@pytest.mark.parametrize("scenario", list(LINT_SCENARIOS))
def test_helm_lint_is_clean(scenario: str) -> None:
    # Lint renders in Helm's lint mode, where `fail` only logs: the chart's defaults
    # lint clean although rendering them stops at "no database configured".
    report = helm.lint(
        CHART_DIR, LINT_SCENARIOS[scenario](), strict=True, kube_version=f"v{KUBE_VERSIONS[0]}"
    )
    # Severity 1 is "info" (e.g. "icon is recommended"); warnings and errors fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(rendered: Rendered, kube_version: str) -> None:
    for template, obj in rendered.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_service_monitor(obj, rendered)
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{template}: {obj['kind']} invalid at {path}: {exc.message}")


def check_service_monitor(obj: dict[str, Any], rendered: Rendered) -> None:
    """kubernetes-validate has no CRD schemas: check what the Prometheus Operator needs."""
    assert obj["kind"] == "ServiceMonitor"
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    service = rendered.one("Service")
    selector = obj["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in obj["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    assert obj["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


BAD_VALUES = {
    "logFormat xml": {"config": {"logFormat": "xml"}},
    "replicaCount two": {"replicaCount": "two"},
    "logLevel verbose": {"config": {"logLevel": "verbose"}},
    "unknown key": {"replicas": 3},
    "unknown nested key": {"config": {"logformat": "json"}},
    "empty image.repository": {"image": {"repository": ""}},
    "pullPolicy": {"image": {"pullPolicy": "Sometimes"}},
    "verifySignature string": {"config": {"verifySignature": "yes"}},
    "negative grace": {"shutdownGraceSeconds": -1},
    "ingress without hosts": {"ingress": {"enabled": True, "hosts": []}},
    "bad pathType": {
        "ingress": {
            "hosts": [{"host": "a.example", "paths": [{"path": "/events", "pathType": "Glob"}]}]
        }
    },
    "bad account sid": {"twilio": {"accountSid": "not-a-sid"}},
    "auth token not a string": {"twilio": {"authToken": {"value": 123}}},
    "database url not postgres": {"database": {"url": "mysql://x"}},
    "secret in the ConfigMap": {"config": {"extra": {"SINK_ADMIN_TOKEN": ADMIN_TOKEN}}},
    "lower-case env name": {"config": {"extra": {"sink_x": "1"}}},
    "accounts file relative mountPath": {"accountsFile": {"mountPath": "etc/accounts"}},
    "accounts file unknown key": {"accountsFile": {"path": "/etc/accounts.toml"}},
    "accounts file not a string": {"accountsFile": {"value": {"accounts": {}}}},
    "helmTest enabled string": {"helmTest": {"enabled": "yes"}},
}


@pytest.mark.parametrize("bad", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_bad_values_fail_schema_validation(bad: dict[str, Any]) -> None:
    values = {**MINIMAL_VALUES, **bad}
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert helm.lint(CHART_DIR, values, strict=True)["errors"]


def test_good_values_pass_schema_validation() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        for make in SCENARIOS.values():
            chart.validate_schema(make())


def test_render_without_a_database_says_what_to_set() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"database\.url"):
        render({})


def test_render_refuses_a_termination_grace_shorter_than_the_drain() -> None:
    values = {**MINIMAL_VALUES, "shutdownGraceSeconds": 30, "terminationGracePeriodSeconds": 30}
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(values)


# --- security --------------------------------------------------------------------------


def test_every_pod_runs_locked_down(rendered: Rendered) -> None:
    specs = list(pod_specs(rendered))
    assert {name.split("/")[0] for name, _ in specs} >= {"Deployment", "Job"}
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] == POD_UID, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["enableServiceLinks"] is False, name
        tmp_volumes = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp_volumes and "emptyDir" in tmp_volumes[0], name
        for container in spec["containers"]:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] == POD_UID, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
            assert container["resources"].get("requests"), where


def test_no_secret_value_outside_a_secret(rendered: Rendered) -> None:
    needles = []
    for secret in FAKE_SECRETS:
        needles += [secret, base64.b64encode(secret.encode()).decode()]
    joined_tokens = ",".join(AUTH_TOKENS)
    needles += [joined_tokens, base64.b64encode(joined_tokens.encode()).decode()]
    for template, obj in rendered.objects:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        leaked = [n for n in needles if n in text]
        if leaked:
            pytest.fail(f"{template}: {obj['kind']} contains secret values {leaked}")
    leaked = [n for n in needles if n in rendered.notes]
    if leaked:
        pytest.fail(f"NOTES.txt contains secret values {leaked}")


def test_chart_secrets_hold_the_values_and_pods_reference_them() -> None:
    rendered = render(CHART_SECRETS_VALUES)
    secret = rendered.one("Secret", "studio-sink")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "database-url": DB_URL,
        "twilio-auth-token": ",".join(AUTH_TOKENS),
        "twilio-api-key-sid": API_KEY_SID,
        "twilio-api-key-secret": API_KEY_SECRET,
        "admin-token": ADMIN_TOKEN,
    }
    for name, spec in pod_specs(rendered):
        if name.startswith("Job/"):
            continue
        env = env_of(spec["containers"][0])
        for var, key in [
            ("SINK_DATABASE_URL", "database-url"),
            ("SINK_TWILIO_AUTH_TOKEN", "twilio-auth-token"),
            ("SINK_TWILIO_API_KEY_SID", "twilio-api-key-sid"),
            ("SINK_TWILIO_API_KEY_SECRET", "twilio-api-key-secret"),
            ("SINK_ADMIN_TOKEN", "admin-token"),
        ]:
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret["metadata"]["name"], "key": key}, (name, var)


def test_existing_secrets_are_referenced_not_created(full: Rendered) -> None:
    secrets = full.of_kind("Secret")
    # Only the values given inline end up in the chart's Secret.
    assert [s["metadata"]["name"] for s in secrets] == [f"{RELEASE}-studio-sink"]
    assert set(secrets[0]["data"]) == {"twilio-auth-token", "twilio-api-key-sid", "admin-token"}
    env = env_of(full.one("Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["SINK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-credentials",
        "key": "uri",
    }
    assert env["SINK_TWILIO_API_KEY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "twilio-api-key",
        "key": "secret",
    }


def test_global_existing_secret_means_no_chart_secret() -> None:
    rendered = render(GLOBAL_SECRET_VALUES)
    assert rendered.of_kind("Secret") == []
    env = env_of(rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0])
    db_ref = env["SINK_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert db_ref == {"name": "sink-credentials", "key": "database-url"}
    for optional in ("SINK_TWILIO_AUTH_TOKEN", "SINK_TWILIO_API_KEY_SID", "SINK_ADMIN_TOKEN"):
        ref = env[optional]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "sink-credentials"
        assert ref["optional"] is True
    job_env = env_of(rendered.one("Job")["spec"]["template"]["spec"]["containers"][0])
    assert job_env["SINK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == db_ref


# --- migrations ------------------------------------------------------------------------


def hook_weight(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_migrate_job_is_a_pre_install_and_pre_upgrade_hook(rendered: Rendered) -> None:
    job = rendered.one("Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    hook_weight(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Nothing the release creates exists yet on a first install: no envFrom of the
    # ConfigMap, no ServiceAccount of the chart.
    assert "envFrom" not in container
    sa = job["spec"]["template"]["spec"].get("serviceAccountName")
    assert sa != f"{RELEASE}-studio-sink"
    assert "SINK_DATABASE_URL" in env_of(container)


def test_migrate_job_reads_the_url_from_a_secret_that_exists_before_it() -> None:
    rendered = render(MINIMAL_VALUES)
    job = rendered.one("Job", "-migrate")
    ref = env_of(job["spec"]["template"]["spec"]["containers"][0])["SINK_DATABASE_URL"]
    secret_name = ref["valueFrom"]["secretKeyRef"]["name"]
    # The chart's Secret is an ordinary object, created after pre-install hooks: the
    # Job must read a hook Secret created before it.
    hook_secret = rendered.one("Secret", "-migrate")
    assert hook_secret["metadata"]["name"] == secret_name
    annotations = hook_secret["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert hook_weight(hook_secret) < hook_weight(job)
    key = ref["valueFrom"]["secretKeyRef"]["key"]
    assert base64.b64decode(hook_secret["data"][key]).decode() == DB_URL


def test_migrate_job_uses_an_existing_secret_directly(full: Rendered) -> None:
    assert [s["metadata"]["name"] for s in full.of_kind("Secret")] == [f"{RELEASE}-studio-sink"]
    job = full.one("Job", "-migrate")
    ref = env_of(job["spec"]["template"]["spec"]["containers"][0])["SINK_DATABASE_URL"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "pg-credentials", "key": "uri"}
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "studio-sink-migrator"


def test_migrate_can_be_disabled() -> None:
    rendered = render({**MINIMAL_VALUES, "migrate": {"enabled": False}})
    assert rendered.of_kind("Job") == []
    assert "migrate.enabled is false" in rendered.notes


# --- the server -------------------------------------------------------------------------


def test_probes_use_healthz_and_readyz(rendered: Rendered) -> None:
    container = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def test_termination_grace_exceeds_the_drain_time(rendered: Rendered) -> None:
    shutdown_grace = int(rendered.configmap_data()["SINK_SHUTDOWN_GRACE"])
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
    assert "exec" not in pre_stop, "the image has no shell tools to exec"
    sleep = pre_stop.get("sleep", {}).get("seconds", 0)
    assert spec["terminationGracePeriodSeconds"] > shutdown_grace + sleep


def test_configmap_holds_settings_only(rendered: Rendered) -> None:
    data = rendered.configmap_data()
    assert data["SINK_HOST"] == "0.0.0.0"
    assert data["SINK_PORT"] == "8080"
    assert data["SINK_VERIFY_SIGNATURE"] == "true"
    secret_settings = {
        "SINK_DATABASE_URL",
        "SINK_TWILIO_AUTH_TOKEN",
        "SINK_TWILIO_API_KEY_SID",
        "SINK_TWILIO_API_KEY_SECRET",
        "SINK_ADMIN_TOKEN",
    }
    assert not secret_settings & set(data)
    assert all(isinstance(v, str) for v in data.values())


def test_numbers_render_as_integers(full: Rendered) -> None:
    data = full.configmap_data()
    # Helm reads numbers as float64; 1048576 must not become 1.048576e+06.
    assert data["SINK_MAX_BODY_BYTES"] == "1048576"
    assert data["SINK_BATCH_MAX_EVENTS"] == "500"
    assert data["SINK_BACKFILL_RATE_LIMIT"] == "2.5"
    assert data["SINK_AUTO_BACKFILL"] == "true"
    assert data["SINK_SHUTDOWN_GRACE"] == "25"
    assert data["SINK_LOG_FORMAT"] == "text"
    assert data["SINK_EXAMPLE_FLAG"] == "on"


def test_optional_settings_are_left_to_the_application_by_default() -> None:
    data = render(MINIMAL_VALUES).configmap_data()
    for name in (
        "SINK_MAX_BODY_BYTES",
        "SINK_DB_POOL_SIZE",
        "SINK_MAINTAIN_INTERVAL",
        "SINK_PUBLIC_URL",
    ):
        assert name not in data


def test_maintenance_cronjob_turns_off_in_process_maintenance(full: Rendered) -> None:
    assert full.configmap_data()["SINK_MAINTAIN_INTERVAL"] == "0"
    cronjob = full.one("CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["maintain"]
    assert "SINK_DATABASE_URL" in env_of(container)


def test_public_url_defaults_to_the_first_ingress_host(full: Rendered) -> None:
    assert full.configmap_data()["SINK_PUBLIC_URL"] == "https://sink.example.com/events"
    assert "https://sink.example.com/events" in full.notes
    ingress = full.one("Ingress")
    assert ingress["spec"]["tls"] == [
        {"hosts": ["sink.example.com"], "secretName": "sink-example-com-tls"}
    ]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    # Only the webhook is public; /metrics and the probes stay inside the cluster.
    assert [p["path"] for p in paths] == ["/events"]


def test_public_url_can_be_overridden() -> None:
    url = "https://hooks.example.org:8443/twilio/events"
    values = {**full_values(), "config": {**full_values()["config"], "publicUrl": url}}
    rendered = render(values)
    assert rendered.configmap_data()["SINK_PUBLIC_URL"] == url
    assert url in rendered.notes


def test_notes_tell_the_webhook_url_and_the_event_types(rendered: Rendered) -> None:
    for event_type in STUDIO_EVENT_TYPES:
        assert event_type in rendered.notes
    assert "/events" in rendered.notes


def test_notes_explain_port_forward_without_an_ingress() -> None:
    notes = render(MINIMAL_VALUES).notes
    assert f"port-forward service/{RELEASE}-studio-sink" in notes


def test_hpa_replaces_the_replica_count(full: Rendered) -> None:
    assert "replicas" not in full.one("Deployment")["spec"]
    hpa = full.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == full.one("Deployment")["metadata"]["name"]
    assert render(MINIMAL_VALUES).one("Deployment")["spec"]["replicas"] == 2


def test_only_server_pods_are_selected(rendered: Rendered) -> None:
    selector = rendered.one("Service")["spec"]["selector"]
    assert selector["app.kubernetes.io/component"] == "server"
    for kind in ("Job", "CronJob"):
        for obj in rendered.of_kind(kind):
            template = (
                obj["spec"]["template"]
                if kind == "Job"
                else obj["spec"]["jobTemplate"]["spec"]["template"]
            )
            labels = template["metadata"]["labels"]
            assert not selector.items() <= labels.items(), (
                f"{kind} pods would receive webhook traffic"
            )
    pdbs = rendered.of_kind("PodDisruptionBudget")
    for pdb in pdbs:
        assert pdb["spec"]["selector"]["matchLabels"] == selector


# --- observability ----------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    return exprs


def test_dashboard_covers_every_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = "\n".join(dashboard_exprs(dashboard))
    for metric in METRICS:
        assert metric in exprs, f"no panel shows {metric}"
    for histogram in HISTOGRAMS:
        assert f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket" in exprs
    for label in ("status", "outcome", "reason", "type", "endpoint"):
        assert f"by ({label}" in exprs or f", {label})" in exprs, (
            f"nothing is broken down by {label}"
        )


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(full: Rendered) -> None:
    cm = full.one("ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert json.loads(cm["data"]["studio-sink.json"]) == json.loads(DASHBOARD.read_text())


def test_service_monitor_scrapes_metrics(full: Rendered) -> None:
    sm = full.one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["interval"] == "15s"


def test_optional_objects_are_off_by_default() -> None:
    kinds = {obj["kind"] for _, obj in render(MINIMAL_VALUES).objects}
    # The Pod is the `helm test` hook: only `helm test` creates it.
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Job",
        "Pod",
        "Secret",
        "Service",
        "ServiceAccount",
    }


# --- `helm test` and the accounts file --------------------------------------------------


def server_container(rendered: Rendered) -> dict[str, Any]:
    container: dict[str, Any] = rendered.one("Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def test_the_helm_test_hook_runs_doctor_with_the_servers_settings(rendered: Rendered) -> None:
    pod = rendered.one("Pod", "-doctor")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["doctor"]
    server = server_container(rendered)
    # The same settings, secrets and mounts as the server: doctor checks what it runs with.
    assert container["envFrom"] == server["envFrom"]
    assert container["env"] == server["env"]
    assert container["volumeMounts"] == server["volumeMounts"]
    server_spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["spec"]["volumes"] == server_spec["volumes"]
    assert pod["spec"]["serviceAccountName"] == server_spec["serviceAccountName"]
    # Only the server pods receive webhook traffic.
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "doctor"


def test_the_helm_test_hook_can_be_disabled() -> None:
    assert f"helm test {RELEASE} --namespace {NAMESPACE} --logs" in render(MINIMAL_VALUES).notes
    rendered = render({**MINIMAL_VALUES, "helmTest": {"enabled": False}})
    assert rendered.of_kind("Pod") == []
    assert "helm test" not in rendered.notes


def accounts_mount(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the accounts volume, its mount, SINK_ACCOUNTS_FILE) of a pod spec."""
    (container,) = spec["containers"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "accounts"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "accounts"]
    return volume, mount, env_of(container)["SINK_ACCOUNTS_FILE"]["value"]


def test_an_inline_accounts_file_is_a_secret_mounted_as_a_file() -> None:
    rendered = render(ACCOUNTS_FILE_VALUES)
    secret = rendered.one("Secret", "-accounts")
    assert base64.b64decode(secret["data"]["accounts.toml"]).decode() == ACCOUNTS_TOML
    specs = dict(pod_specs(rendered))
    for name, spec in specs.items():
        if name.startswith("Job/"):
            # the migration needs no account
            assert all(v["name"] != "accounts" for v in spec["volumes"]), name
            continue
        volume, mount, path = accounts_mount(spec)
        assert volume["secret"] == {
            "secretName": secret["metadata"]["name"],
            "items": [{"key": "accounts.toml", "path": "accounts.toml"}],
        }, name
        # A directory, not a subPath: Kubernetes updates it in place and the sink reloads.
        assert "subPath" not in mount and mount["readOnly"] is True, name
        assert (
            path
            == f"{mount['mountPath']}/accounts.toml"
            == ("/etc/studio-sink/accounts/accounts.toml")
        ), name
    assert {name.split("/")[0] for name in specs} == {"Deployment", "Job", "CronJob", "Pod"}


def test_a_change_of_the_accounts_file_does_not_restart_the_pods() -> None:
    changed = {**ACCOUNTS_FILE_VALUES, "accountsFile": {"value": ACCOUNTS_TOML + "\n# next\n"}}
    before = render(ACCOUNTS_FILE_VALUES).one("Deployment")["spec"]["template"]["metadata"]
    after = render(changed).one("Deployment")["spec"]["template"]["metadata"]
    assert before["annotations"] == after["annotations"]


def test_an_existing_accounts_secret_is_mounted_not_created(full: Rendered) -> None:
    assert all(not s["metadata"]["name"].endswith("-accounts") for s in full.of_kind("Secret"))
    volume, mount, path = accounts_mount(full.one("Deployment")["spec"]["template"]["spec"])
    assert volume["secret"] == {
        "secretName": "studio-sink-accounts",
        "items": [{"key": "accounts", "path": "accounts.toml"}],
    }
    assert mount["mountPath"] == "/etc/sink/accounts"
    assert path == "/etc/sink/accounts/accounts.toml"


def test_no_accounts_file_by_default() -> None:
    rendered = render(MINIMAL_VALUES)
    for name, spec in pod_specs(rendered):
        assert all(v["name"] != "accounts" for v in spec["volumes"]), name
        assert "SINK_ACCOUNTS_FILE" not in env_of(spec["containers"][0]), name
