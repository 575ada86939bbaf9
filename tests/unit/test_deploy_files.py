"""What can be checked of the deployment files without a Docker engine or a cluster.

No Docker engine runs where these tests run, so nothing here builds an image or starts a container. The
files are parsed and cross-checked instead: the Dockerfile's stages, user and healthcheck; compose's
services, mounts and commands (every ``sluice`` command line goes through the real argument parser and
every ``SLUICE_*`` variable through the real settings loader); Prometheus' configuration with
``promtool``; the Kubernetes manifests' kinds, selectors, probes and security context; and the Grafana
dashboard, whose every query must parse as PromQL (``promtool``) and name only metrics that a real
gateway exports. Tests marked ``integration`` start that gateway on 127.0.0.1; the rest open no socket.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sluice.server.app import create_app
from sluice.server.cli import build_parser
from sluice.server.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "sluice.json"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"

READY, LIVE = "/v2/health/ready", "/v2/health/live"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def route_paths() -> set[str]:
    """The paths the real app serves (built, not started: nothing is loaded or bound)."""
    app = create_app(Settings(repository=Path("models")))
    return {route.path for route in app.app.routes}  # type: ignore[attr-defined]


def check_sluice_command(argv: list[str]) -> Any:
    """Parse a ``sluice`` command line with the real parser (unknown flags exit with status 2)."""
    assert argv and argv[0] == "sluice", argv
    return build_parser().parse_args(argv[1:])


def check_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Every ``SLUICE_*`` variable must be a setting with a valid value (load_settings raises otherwise)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    for key in env:
        field = key.removeprefix("SLUICE_").split("__")[0].lower()
        assert field in type(settings).model_fields, key


# ----- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The build stages: ``(FROM arguments, instructions of that stage)``."""
    found: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, arguments in instructions:
        if keyword == "FROM":
            found.append((arguments, []))
        elif found:
            found[-1][1].append((keyword, arguments))
    return found


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command() -> list[str]:
    final = stages(dockerfile_instructions((DOCKER / "Dockerfile").read_text()))[-1][1]
    (arguments,) = [a for k, a in final if k == "HEALTHCHECK"]
    _, _, command = arguments.partition("CMD ")
    return exec_form(command)


def test_dockerfile_is_multi_stage_slim_and_copies_what_exists() -> None:
    built = stages(dockerfile_instructions((DOCKER / "Dockerfile").read_text()))
    assert len(built) >= 2
    names = {frm.split(" AS ")[-1].strip() for frm, _ in built if " AS " in frm}
    for frm, _ in built:
        assert re.match(r"python:\$\{PYTHON_VERSION\}-slim|python:3\.11[\w.]*-slim", frm), frm
    copied_from = [a for _, body in built[1:] for k, a in body if k == "COPY" and a.startswith("--from=")]
    assert copied_from, "the runtime stage must copy the build stage's output"
    for arguments in copied_from:
        assert arguments.split()[0].removeprefix("--from=") in names
    for _, body in built:
        for keyword, arguments in body:
            if keyword == "COPY" and not arguments.startswith("--"):
                for source in arguments.split()[:-1]:
                    assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_dockerfile_runs_as_non_root_with_healthcheck_volume_and_serve() -> None:
    final = stages(dockerfile_instructions((DOCKER / "Dockerfile").read_text()))[-1][1]
    users = [a for k, a in final if k == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert any(k == "VOLUME" and "/models" in a for k, a in final)
    assert any(k == "EXPOSE" and a.split("/")[0] == "8000" for k, a in final)
    health = healthcheck_command()
    assert health[0] == "python" and READY in " ".join(health), health
    assert "curl" not in " ".join(health) and "wget" not in " ".join(health)
    (entrypoint,) = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    (cmd,) = [exec_form(a) for k, a in final if k == "CMD"]
    args = check_sluice_command(entrypoint + cmd)
    assert (args.command, str(args.repository), args.host) == ("serve", "/models", "0.0.0.0")
    assert READY in route_paths()


def test_dockerignore_keeps_the_build_context_to_the_distribution() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore
    for package in ("server", "converters", "monitoring"):
        assert f"!{package}/**" in ignore


@pytest.mark.integration
def test_dockerfile_healthcheck_follows_readiness(gateway: Any) -> None:
    """Run the HEALTHCHECK command itself against a real gateway, then against a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    command = [sys.executable, *healthcheck_command()[1:]]
    ok = subprocess.run(command, env={**env, "SLUICE_PORT": str(gateway.port)}, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        refused = subprocess.run(command, env={**env, "SLUICE_PORT": str(port)}, capture_output=True)
    assert refused.returncode != 0


# ----- Compose ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    body: dict[str, Any] = load_yaml(DOCKER / "compose.yaml")
    return body


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (relative to docker/, as compose resolves)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (DOCKER / source).resolve()
    return mounts


def test_compose_parses_and_its_services_fit_together(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    assert {"gateway", "prometheus", "grafana"} <= set(services)
    gateway = services["gateway"]
    context = (DOCKER / gateway["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / gateway["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    final = stages(dockerfile_instructions((DOCKER / "Dockerfile").read_text()))[-1][1]
    (entrypoint,) = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    args = check_sluice_command(entrypoint + gateway["command"])
    assert (args.command, str(args.repository), args.host, args.build_only) == (
        "demo",
        "/models",
        "0.0.0.0",
        False,
    )
    check_environment(monkeypatch, gateway.get("environment", {}))
    drain_s = float(gateway["environment"]["SLUICE_DRAIN_TIMEOUT_S"])
    assert float(gateway["stop_grace_period"].removesuffix("s")) > drain_s
    assert any(p.split(":")[-1] == "8000" for p in gateway["ports"])

    named = set(compose().get("volumes", {}))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"volume {source} is not declared"
        for dependency in service.get("depends_on", []):
            assert dependency in services


def test_compose_bind_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_compose_prometheus_gets_its_config_and_every_rule_file_and_scrapes_the_gateway() -> None:
    services = compose()["services"]
    mounts = bind_mounts(services["prometheus"])
    config_flag = next(f for f in services["prometheus"]["command"] if f.startswith("--config.file="))
    config_path = config_flag.partition("=")[2]
    assert mounts[config_path] == PROMETHEUS_CONFIG
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"], "no alert rules loaded"
    for rule_file in config["rule_files"]:
        in_container = str(Path(config_path).parent / rule_file)
        assert mounts[in_container] == PROMETHEUS_CONFIG.parent / rule_file
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "gateway:8000" in targets


def test_compose_grafana_provisioning_fits_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "sluice.yaml")["providers"]
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name).resolve() == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[str(Path(home).parent)] / Path(home).name).resolve() == DASHBOARD
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard_panels()
        for target in [panel, *panel.get("targets", [])]
        if "datasource" in target
    }
    assert uids == {datasource["uid"]}


# ----- Prometheus (promtool) --------------------------------------------------------------------


def test_promtool_checks_the_prometheus_config(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path, promtool: str) -> None:
    """Each query becomes a recording rule (Grafana's variables filled in) that promtool parses."""
    rules = [
        {"record": f"sluice_dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


# ----- Kubernetes -------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    """Every object in docker/k8s."""
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind"} <= set(document), path
            assert document["kind"] == "Kustomization" or document["metadata"]["name"], path
            found.append(document)
    return found


def k8s_objects(name: str = "sluice") -> dict[str, dict[str, Any]]:
    """The objects named ``name`` (the gateway's by default, and the Kustomization) by kind, each once."""
    objects: dict[str, dict[str, Any]] = {}
    for document in k8s_documents():
        if document["kind"] != "Kustomization" and document["metadata"]["name"] != name:
            continue
        assert document["kind"] not in objects, f"two {document['kind']} objects named {name}"
        objects[document["kind"]] = document
    return objects


def test_k8s_manifests_parse_with_the_expected_kinds() -> None:
    objects = k8s_objects()
    expected = {
        "Deployment": "apps/v1",
        "Service": "v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
        "PodMonitor": "monitoring.coreos.com/v1",
        "PodDisruptionBudget": "policy/v1",
        "Kustomization": "kustomize.config.k8s.io/v1beta1",
    }
    assert {kind: obj["apiVersion"] for kind, obj in objects.items()} == expected
    listed = objects["Kustomization"]["resources"]
    for name in listed:
        assert (K8S / name).is_file(), name
    # The PodMonitor needs the operator's CRDs, so `kubectl apply -k` leaves it out; everything else is in.
    in_files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "podmonitor.yaml"}
    assert set(listed) == in_files


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    return spec


def test_k8s_deployment_probes_point_at_real_endpoints() -> None:
    (container,) = pod_spec()["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    probes = {
        name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    assert probes["readinessProbe"]["path"] == READY
    assert probes["livenessProbe"]["path"] == LIVE
    for probe in probes.values():
        assert probe["path"] in route_paths()
        assert probe["port"] in ports


def test_k8s_deployment_runs_non_root_with_resources_and_a_models_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    (init,) = spec["initContainers"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"]
    for c in (init, container):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts["/models"] == "models"
        assert set(mounts.values()) <= set(volumes)
    init_args = check_sluice_command(["sluice", *init["args"]])
    assert (init_args.command, init_args.build_only, str(init_args.repository)) == ("demo", True, "/models")
    args = check_sluice_command(["sluice", *container["args"]])
    assert (args.command, str(args.repository), args.host) == ("serve", "/models", "0.0.0.0")
    env = {e["name"]: e["value"] for e in container["env"]}
    check_environment(monkeypatch, env)
    # Kubernetes sends SIGKILL after the grace period: it must cover preStop and the drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = float(env["SLUICE_DRAIN_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_s


def test_k8s_service_hpa_pdb_and_podmonitor_select_the_deployment() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= pod_labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(objects["Service"]["spec"]["selector"])
    assert {p["targetPort"] for p in objects["Service"]["spec"]["ports"]} <= port_names
    assert selects(objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    monitor = objects["PodMonitor"]["spec"]
    assert selects(monitor["selector"]["matchLabels"])
    for endpoint in monitor["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics" and "/metrics" in route_paths()
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]


def test_k8s_replicas_share_one_rollout_store(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = k8s_objects()
    redis = k8s_objects("sluice-redis")
    assert {"Deployment", "Service"} <= set(redis)
    assert gateway["Deployment"]["spec"]["replicas"] > 1
    assert gateway["HorizontalPodAutoscaler"]["spec"]["minReplicas"] > 1
    (container,) = pod_spec()["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    check_environment(monkeypatch, env)
    store = urlsplit(env["SLUICE_ROLLOUT_STORE"])
    service = redis["Service"]
    assert (store.scheme, store.hostname) == ("redis", service["metadata"]["name"])
    (port,) = service["spec"]["ports"]
    assert store.port == port["port"]
    pod = redis["Deployment"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (server,) = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in server["ports"]}
    assert server["args"][0] == "redis-server" and server["securityContext"]["readOnlyRootFilesystem"]
    # The gateway's own selectors must not pick up the store's pods.
    assert not gateway["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_compose_gateway_names_the_redis_service(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    gateway, redis = services["gateway"], services["redis"]
    check_environment(monkeypatch, gateway["environment"])
    store = urlsplit(gateway["environment"]["SLUICE_ROLLOUT_STORE"])
    assert (store.scheme, store.hostname, store.port) == ("redis", "redis", 6379)
    assert "redis" in gateway["depends_on"] and redis["command"][0] == "redis-server"


# ----- Grafana dashboard ------------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_queries() -> list[str]:
    return [t["expr"] for panel in dashboard_panels() for t in panel.get("targets", [])]


def variable_queries() -> list[str]:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    return [v["query"]["query"] for v in variables if v["type"] == "query"]


def grafana_to_promql(expr: str) -> str:
    """Fill in Grafana's variables the way Grafana would, so that the query is plain PromQL."""
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label names and durations left out)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # the unit of a duration or the exponent of a number
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def variable_metric(query: str) -> str:
    match = re.fullmatch(
        r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)", query
    )
    assert match, f"unexpected variable query {query!r}"
    return match.group(1)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum(rate(a_total{x="y", z=~"$v"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le, model) (rate(h_bucket[5m])))", {"h_bucket"}),
        ("sum by (m) (a) / ignoring (v) group_left sum without (v) (b offset 1h)", {"a", "b"}),
        ("sum(a) by (le) > 1e3 and on(model) b_rows", {"a", "b_rows"}),
        ('label_replace(up, "x", "$1", "job", "(.*)")', {"up"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboard_has_the_panels_operators_need() -> None:
    panels = dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels)
    queries = [grafana_to_promql(q) for q in dashboard_queries()]
    assert all(metric_names(q) for q in queries), "a query that selects no metric"
    titles = {p["title"] for p in panels}
    assert {
        "Traffic split by version and route reason",
        "Request latency percentiles",
        "Batch sizes",
    } <= titles
    assert {"Queue depth", "Shed requests", "Drift incidents", "Shadow agreement"} <= titles
    split = next(p for p in panels if p["title"].startswith("Traffic split"))
    assert all("version" in t["expr"] and "reason" in t["expr"] for t in split["targets"])
    assert any("histogram_quantile" in q for q in queries)


def exported_metric_names(exposition: str) -> set[str]:
    """Every series name a query can select, from the metric families (HELP/TYPE) of ``exposition``."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "summary": ["", "_sum", "_count"],
        "gauge": [""],
        "unknown": [""],
    }
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes[family.type])
        names.update(sample.name for sample in family.samples if not sample.name.endswith("_created"))
    return names


@pytest.mark.integration
def test_every_dashboard_query_names_a_metric_the_gateway_exports(gateway: Any) -> None:
    client = gateway.client
    inputs = client.get("/v2/models/clf").json()["inputs"]
    body = {
        "inputs": [
            {"name": i["name"], "shape": [3, 4], "datatype": i["datatype"], "data": np.ones(12).tolist()}
            for i in inputs
        ]
    }
    for _ in range(3):
        assert client.post("/v2/models/clf/infer", json=body).status_code == 200
    assert client.post("/v2/models/no_such_model/infer", json=body).status_code == 404
    exposition = client.get("/metrics").text

    exported = exported_metric_names(exposition)
    assert {"sluice_requests_total", "sluice_request_duration_seconds_bucket"} <= exported
    assert "sluice_requests" not in exported and "sluice_no_such_metric" not in exported
    for query in dashboard_queries():
        unknown = metric_names(query) - exported
        assert not unknown, f"{sorted(unknown)} in {query!r} is not exported by the gateway"
    for query in variable_queries():
        assert variable_metric(query) in exported, query


# ----- Load tests -------------------------------------------------------------------------------


def test_locust_is_a_bench_extra_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}

    assert "locust" not in names(project["dependencies"])
    assert "locust" in names(project["optional-dependencies"]["bench"])
    for group, requirements in project["optional-dependencies"].items():
        assert group == "bench" or "locust" not in names(requirements), group
    # docs/operations.md runs it with these options.
    text = (ROOT / "loadtests" / "locustfile.py").read_text()
    for option in ("--model", "--rows"):
        assert f'"{option}"' in text
