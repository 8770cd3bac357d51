"""deploy/: the compose file validates and its nodes, run as local processes, learn together;
the Kubernetes manifests parse and agree on names, labels and ports; the Dockerfile has its
CPU/CUDA switch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, NodeProcess, free_ports, get_json
from mqtt_broker import mosquitto_fixture  # noqa: F401  (the `mosquitto` fixture)

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e .[test]")

COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
NODE_PORT = 8470


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       "docker-compose", shell=True, capture_output=True, timeout=300, check=False)
        exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not found and cannot be installed (Debian: apt-get install docker-compose)")
    return exe


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (anchors, merges, defaults applied)."""
    out = subprocess.run([_docker_compose(), "-f", str(COMPOSE), "config"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def _nodes(compose: dict) -> dict[str, dict]:
    """The node services that run by default (not those of a profile such as gpu)."""
    return {k: v for k, v in compose["services"].items() if k.startswith("node") and not v.get("profiles")}


def _ports(svc: dict) -> list[tuple[str, int, int]]:
    """(host ip, published, target) of each published port, short or long syntax."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            ip = parts[0] if len(parts) == 3 else ""
            out.append((ip, int(parts[-2]) if len(parts) >= 2 else 0, int(parts[-1])))
    return out


def _volume_names(svc: dict) -> list[str]:
    return [v.split(":")[0] if isinstance(v, str) else v["source"] for v in svc.get("volumes", [])]


def test_compose_file_is_valid_and_complete(compose) -> None:
    services = compose["services"]
    nodes = _nodes(compose)
    assert "broker" in services and len(nodes) >= 4
    assert services["broker"]["image"].startswith("eclipse-mosquitto")
    assert any("deploy/mosquitto-compose.conf" in v for v in services["broker"]["volumes"])
    shards, published = set(), set()
    for name, svc in nodes.items():
        cmd = svc["command"]
        shard = cmd[cmd.index("--shard") + 1]
        i, n = shard.split("/")
        assert int(n) == len(nodes)
        shards.add(int(i))
        assert svc["environment"]["GOSSIPNODE_BROKER"] == "mqtt://broker:1883"
        assert "mqtt" in svc["environment"]["GOSSIPNODE_TRANSPORT"]
        assert "/v1/health" in " ".join(svc["healthcheck"]["test"])
        ((ip, pub, target),) = _ports(svc)
        assert target == NODE_PORT
        published.add(pub)
        state = [v for v in _volume_names(svc) if v.endswith("-state")]
        assert len(state) == 1 and state[0] in compose["volumes"], f"{name}: no named state volume"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert shards == set(range(len(nodes))) and len(published) == len(nodes)
    prom = services.get("prometheus")
    if prom is not None:
        targets = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        listed = {t for sc in targets["scrape_configs"] for c in sc["static_configs"] for t in c["targets"]}
        assert listed == {f"{n}:{NODE_PORT}" for n in nodes}


def test_compose_binds_little_and_the_broker_needs_credentials(compose) -> None:
    services = compose["services"]
    # nothing published on all interfaces: REST and Prometheus on loopback, the broker not at all
    for name, svc in services.items():
        for ip, pub, _ in _ports(svc):
            assert ip == "127.0.0.1", f"{name} publishes port {pub} on all interfaces"
    assert not services["broker"].get("ports"), "the broker is for the containers only"
    conf = (ROOT / "deploy" / "mosquitto-compose.conf").read_text()
    assert "allow_anonymous false" in conf and "password_file /mosquitto/auth/passwd" in conf
    assert "allow_anonymous true" not in conf
    init = services["broker-init"]
    assert "mosquitto_passwd" in " ".join(init["command"]) and "broker-auth" in _volume_names(init)
    assert "broker-auth" in _volume_names(services["broker"])
    assert "-u gossipnode" in " ".join(services["broker"]["healthcheck"]["test"])
    for svc in _nodes(compose).values():
        env = svc["environment"]
        assert env["GOSSIPNODE_MQTT_USERNAME"] == "gossipnode"
        assert env["GOSSIPNODE_MQTT_PASSWORD_FILE"].startswith("/run/gossipnode-broker/")
        assert "broker-auth" in _volume_names(svc)
        assert "GOSSIPNODE_API_TOKEN" in env  # passed through from the operator's shell


def test_compose_broker_refuses_anonymous_and_takes_the_generated_password(compose, tmp_path) -> None:
    """broker-init's script and mosquitto-compose.conf, run here: the script writes a password
    and its hash, the broker (the compose config, port and paths remapped) refuses anonymous
    clients and answers the broker healthcheck's authenticated subscribe."""
    from mqtt_broker import Broker, find_mosquitto
    exe, sub = find_mosquitto(), shutil.which("mosquitto_sub")
    if exe is None or sub is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto, mosquitto_sub, mosquitto_passwd needed (Debian: mosquitto mosquitto-clients)")
    services = compose["services"]
    auth = tmp_path / "auth"
    auth.mkdir()
    script = services["broker-init"]["command"][0].replace("$$", "$").replace("/auth/", f"{auth}/")
    out = subprocess.run(["sh", "-c", "chown() { :; }\n" + script], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 0, out.stderr
    password = (auth / "password").read_text()
    assert len(password) >= 24 and (auth / "passwd").read_text().startswith("gossipnode:")
    assert oct((auth / "passwd").stat().st_mode & 0o777) == "0o600"
    b = Broker(exe, tmp_path)
    lines = []
    for line in (ROOT / "deploy" / "mosquitto-compose.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        line = {"listener": f"listener {b.port} 127.0.0.1", "password_file": f"password_file {auth / 'passwd'}",
                "log_dest": "log_dest stderr"}.get(key, line)
        lines.append(line)
    if os.geteuid() == 0:
        lines.append("user root")   # as root, mosquitto would drop to user "mosquitto" (no access here)
    b.conf.write_text("\n".join(lines) + "\n")
    b.start()
    try:
        anon = subprocess.run([sub, "-h", "127.0.0.1", "-p", str(b.port), "-t", "$SYS/broker/uptime", "-C", "1",
                               "-W", "3"], capture_output=True, text=True, timeout=20, check=False)
        assert anon.returncode != 0, "an anonymous client was let in"
        wrong = subprocess.run([sub, "-h", "127.0.0.1", "-p", str(b.port), "-u", "gossipnode", "-P", "nope",
                                "-t", "$SYS/broker/uptime", "-C", "1", "-W", "3"],
                               capture_output=True, text=True, timeout=20, check=False)
        assert wrong.returncode != 0, "a wrong password was let in"
        check = services["broker"]["healthcheck"]["test"][1].replace("$$", "$")
        check = check.replace("/mosquitto/auth/", f"{auth}/").replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {b.port}")
        ok = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=20, check=False)
        assert ok.returncode == 0, (ok.stdout, ok.stderr, b.log())
    finally:
        b.stop()


def _seconds(v) -> float:
    v = str(v)
    if v.endswith("m"):
        return 60 * float(v[:-1])
    return float(v.rstrip("s"))


def test_compose_waits_for_healthy_services_and_stops_gracefully(compose) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, d in deps.items():
            cond = d["condition"]
            assert cond in ("service_healthy", "service_completed_successfully"), (name, dep, cond)
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no healthcheck"
    assert services["broker"]["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"
    for svc in _nodes(compose).values():
        assert svc["depends_on"]["broker"]["condition"] == "service_healthy"
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert _seconds(svc["stop_grace_period"]) >= 5  # a node stops within 3.5 s
    assert set(services["prometheus"]["depends_on"]) == set(_nodes(compose))


def test_compose_gpu_profile(compose) -> None:
    gpu = compose["services"]["gpu-node"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["FLAVOR"] == "cuda" and gpu["environment"]["GOSSIPNODE_DEVICE"] == "auto"
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    cmd = gpu["command"]
    assert cmd[cmd.index("--shard") + 1] == f"{len(_nodes(compose))}/{len(_nodes(compose))}"  # needs SHARDS=5
    text = COMPOSE.read_text()
    assert text.count("${GOSSIPNODE_SHARDS:-4}") == len(_nodes(compose)) + 1


def test_dockerfile_has_cpu_default_and_cuda_switch() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "ARG FLAVOR=cpu" in text and "FROM base-${FLAVOR}" in text
    assert "https://download.pytorch.org/whl/cpu" in text and "nvidia/cuda" in text
    assert "ENTRYPOINT [\"gossipnode\"]" in text and "/v1/health" in text
    assert "STOPSIGNAL SIGTERM" in text and "USER gossip" in text


def test_dockerfile_pins_the_torch_of_scripts_setup() -> None:
    import re
    setup = (ROOT / "scripts" / "setup").read_text()
    (pinned,) = set(re.findall(r"TORCH_VERSION:-([0-9.]+)", setup))
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"ARG TORCH_VERSION={pinned}\n" in text
    assert '"torch${TORCH_VERSION:+==$TORCH_VERSION}"' in text


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_compose_nodes_learn_together_as_local_processes(compose, mosquitto, tmp_path) -> None:
    """Each node service's command and environment, run here: host names point at loopback
    (broker -> the test Mosquitto), container ports are remapped, state dirs go to tmp."""
    nodes = _nodes(compose)
    ports = free_ports(len(nodes))
    procs: list[NodeProcess] = []
    try:
        for (name, svc), port in zip(sorted(nodes.items()), ports, strict=False):
            env = {k: str(v) for k, v in svc["environment"].items()}
            env["GOSSIPNODE_BROKER"] = env["GOSSIPNODE_BROKER"].replace("broker:1883", f"127.0.0.1:{mosquitto.port}")
            # the test broker is anonymous (broker-init's password file exists only in compose)
            for k in ("GOSSIPNODE_MQTT_USERNAME", "GOSSIPNODE_MQTT_PASSWORD_FILE"):
                env.pop(k)
            env["GOSSIPNODE_HOST"] = "127.0.0.1"
            env["GOSSIPNODE_STATE_DIR"] = str(tmp_path / name)
            env["GOSSIPNODE_PORT"] = str(port)
            cmd = list(svc["command"])
            assert cmd[0] == "start"
            p = NodeProcess(port, tmp_path / name, [], tmp_path / f"{name}.log")
            with open(p.log_path, "ab") as log:
                # NodeProcess adds --port/--state-dir flags; here only the compose env sets them
                p.proc = subprocess.Popen([sys.executable, "-m", "gossipnode", *cmd], stdout=log,
                                          stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                          env=os.environ | env | {"PYTHONUNBUFFERED": "1"})
            procs.append(p)
        for p in procs:
            p.wait_up()
        deadline = time.monotonic() + 150
        accs: list[float] = []
        while time.monotonic() < deadline:
            try:
                st = [p.status() for p in procs]
            except OSError:
                st = []
            accs = [s["last_eval"]["accuracy"] for s in st if s["last_eval"] and s["last_eval"]["round"] > 0]
            if len(accs) == len(procs) and min(accs) >= 0.6 and all(s["peers_known"] == len(procs) - 1 for s in st):
                break
            time.sleep(1.0)
        else:
            logs = "\n\n".join(p.log()[-1500:] for p in procs)
            raise AssertionError(f"compose nodes did not reach accuracy 0.6 (got {accs}):\n{logs}")
        peers = get_json(procs[0].url + "/v1/peers")["peers"]
        assert all(a.startswith("mqtt://") for p in peers for a in p["addresses"])
    finally:
        for p in procs:
            p.kill()


# ---- Kubernetes ---------------------------------------------------------------------------------
def _load(f: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(f.read_text()) if d]


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _generated_configmaps(kust: dict) -> dict[str, dict[str, str]]:
    return {g["name"]: dict(lit.split("=", 1) for lit in g.get("literals", []))
            for g in kust.get("configMapGenerator", [])}


def _k8s_docs(with_gpu: bool = True) -> list[dict]:
    """What `kubectl apply -k deploy/k8s` applies (replicas set, generated ConfigMaps added, no
    name hashes), plus nodes-gpu.yaml when `with_gpu` (with its replicas counted in SHARDS)."""
    kust = _kustomization()
    files = list(kust["resources"]) + (["nodes-gpu.yaml"] if with_gpu and "nodes-gpu.yaml" not in
                                       kust["resources"] else [])
    docs = [d for f in files for d in _load(K8S / f)]
    counts = {r["name"]: r["count"] for r in kust.get("replicas", [])}
    for d in docs:
        if d["metadata"]["name"] in counts and d["kind"] in ("StatefulSet", "Deployment"):
            d["spec"]["replicas"] = counts[d["metadata"]["name"]]
    cms = _generated_configmaps(kust)
    if with_gpu and "nodes-gpu.yaml" not in kust["resources"]:  # as the comments say: add its nodes
        gpu = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "gossipnode-gpu")
        cms["gossipnode-shards"]["SHARDS"] = str(int(cms["gossipnode-shards"]["SHARDS"]) + gpu["spec"]["replicas"])
    docs += [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": data}
             for n, data in cms.items()]
    return docs


def _by_kind(docs: list[dict]) -> dict[str, dict[str, dict]]:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind


def _port_names(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _env(container: dict, configmaps: dict[str, dict]) -> dict[str, str | None]:
    """The container's environment, ConfigMap references resolved (None: from elsewhere)."""
    out: dict[str, str | None] = {}
    for e in container["env"]:
        ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            out[e["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
        else:
            out[e["name"]] = e.get("value")
    return out


def _workloads(by_kind) -> list[tuple[str, dict]]:
    return [(n, w) for kind in ("StatefulSet", "Deployment") for n, w in by_kind.get(kind, {}).items()]


def test_k8s_manifests_parse_and_are_consistent() -> None:
    docs = _k8s_docs()
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)
    by_kind = _by_kind(docs)
    services, sets = by_kind["Service"], by_kind["StatefulSet"]
    deployments, configmaps = by_kind["Deployment"], by_kind["ConfigMap"]
    assert {"gossipnode", "gossipnode-gpu"} <= set(sets) and "gossipnode-broker" in deployments

    def check_service(svc: dict, template: dict) -> None:
        labels = template["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "selector mismatch"
        ports = {n: p for c in template["spec"]["containers"] for n, p in _port_names(c).items()}
        for sp in svc["spec"]["ports"]:
            tp = sp["targetPort"]
            assert (tp in ports) if isinstance(tp, str) else (tp in ports.values())

    for name, ss in sets.items():
        svc = services[ss["spec"]["serviceName"]]
        assert svc["spec"].get("clusterIP") == "None", f"{name}: its service must be headless"
        tmpl = ss["spec"]["template"]
        assert all(tmpl["metadata"]["labels"].get(k) == v for k, v in ss["spec"]["selector"]["matchLabels"].items())
        check_service(svc, tmpl)
        (c,) = tmpl["spec"]["containers"]
        env = _env(c, configmaps)
        assert int(env["GOSSIPNODE_PORT"]) == _port_names(c)["http"] == NODE_PORT
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/v1/health", "port": "http"}, (name, probe)
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 60
        assert "requests" in c["resources"] and "cpu" in c["resources"]["requests"]
        broker = env["GOSSIPNODE_BROKER"].split("://")[1]
        bhost, bport = broker.split(":")
        assert bhost in services and any(p["port"] == int(bport) for p in services[bhost]["spec"]["ports"])
        assert env["GOSSIPNODE_MQTT_USERNAME"] == "gossipnode"
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs["GOSSIPNODE_MQTT_PASSWORD"] == {"name": "gossipnode-broker-auth", "key": "password"}
        assert refs["GOSSIPNODE_API_TOKEN"]["optional"] is True
        mounts = {m["name"] for m in c["volumeMounts"]}
        assert mounts <= ({t["metadata"]["name"] for t in ss["spec"]["volumeClaimTemplates"]}
                          | {v["name"] for v in tmpl["spec"].get("volumes", [])})
        assert tmpl["spec"]["terminationGracePeriodSeconds"] >= 5
        # the start command: shard from the ordinal, advertised name under the headless service
        script = c["args"][0].replace("exec gossipnode start", "echo")
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, check=False,
                             env={"HOSTNAME": f"{name}-1", "POD_NAMESPACE": "ns",
                                  "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                  **{k: v for k, v in env.items() if v is not None}}).stdout.split()
        shard = out[out.index("--shard") + 1]
        assert shard == f"{int(env['SHARD_OFFSET']) + 1}/{env['SHARDS']}"
        adv = out[out.index("--advertise") + 1]
        assert adv == f"http://{name}-1.{ss['spec']['serviceName']}.ns.svc.cluster.local:{NODE_PORT}"
        boot = out[out.index("--peers") + 1].split("//")[1].split(".")
        assert boot[0] == "gossipnode-0" and boot[1] in services
    gpu = sets["gossipnode-gpu"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    broker = deployments["gossipnode-broker"]["spec"]["template"]
    check_service(services["gossipnode-broker"], broker)
    cm = next(v for v in broker["spec"]["volumes"] if "configMap" in v)["configMap"]["name"]
    conf = configmaps[cm]["data"]["mosquitto.conf"]
    assert "listener 1883" in conf and "allow_anonymous false" in conf and "password_file" in conf
    assert _port_names(broker["spec"]["containers"][0])["mqtt"] == 1883
    (init,) = broker["spec"]["initContainers"]
    assert init["command"][0] == "mosquitto_passwd"
    assert init["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "gossipnode-broker-auth", "key": "password"}
    assert services["gossipnode-broker"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_k8s_one_place_sets_nodes_and_shards() -> None:
    kust = _kustomization()
    assert kust["kind"] == "Kustomization"
    assert all((K8S / f).is_file() for f in kust["resources"])
    cms = _generated_configmaps(kust)
    for with_gpu in (False, True):
        by_kind = _by_kind(_k8s_docs(with_gpu))
        sets, configmaps = by_kind["StatefulSet"], by_kind["ConfigMap"]
        shards = set()
        for name, ss in sets.items():
            (c,) = ss["spec"]["template"]["spec"]["containers"]
            env = _env(c, configmaps)
            offset, n = int(env["SHARD_OFFSET"]), int(env["SHARDS"])
            shards |= {offset + i for i in range(ss["spec"]["replicas"])}
            assert n == sum(s["spec"]["replicas"] for s in sets.values()), f"{name}: SHARDS != nodes"
        assert shards == set(range(len(shards))), "every shard exactly once"
    assert int(cms["gossipnode-shards"]["CPU_NODES"]) == next(
        r["count"] for r in kust["replicas"] if r["name"] == "gossipnode")
    # the manifests take SHARDS only from the generated ConfigMap: no second place to forget
    for f in ("nodes.yaml", "nodes-gpu.yaml"):
        (ss,) = [d for d in _load(K8S / f) if d["kind"] == "StatefulSet"]
        (c,) = ss["spec"]["template"]["spec"]["containers"]
        (shards_env,) = [e for e in c["env"] if e["name"] == "SHARDS"]
        assert shards_env["valueFrom"]["configMapKeyRef"]["name"] in cms


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret", "name"}


def test_k8s_pods_meet_the_restricted_pod_security_level() -> None:
    """The checks of Pod Security Standards "restricted" (v1.30) that manifests can fail."""
    for name, w in _workloads(_by_kind(_k8s_docs())):
        spec = w["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        for v in spec.get("volumes", []):
            assert set(v) <= ALLOWED_VOLUMES, f"{name}: volume type {set(v) - ALLOWED_VOLUMES}"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert not sc.get("privileged"), where
            caps = sc.get("capabilities", {})
            assert "ALL" in caps.get("drop", []), where
            assert set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, where
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            assert seccomp in ("RuntimeDefault", "Localhost"), where
            assert not any("hostPort" in p for p in c.get("ports", [])), where
        assert spec.get("automountServiceAccountToken") is False, name


def test_k8s_disruption_budgets_and_network_policies() -> None:
    by_kind = _by_kind(_k8s_docs())
    pdbs = by_kind["PodDisruptionBudget"]
    policies = by_kind["NetworkPolicy"]

    def selects(selector: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for name, ss in by_kind["StatefulSet"].items():
        labels = ss["spec"]["template"]["metadata"]["labels"]
        (pdb,) = [p for p in pdbs.values() if selects(p["spec"]["selector"], labels)]
        assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable"), name
    for name, w in _workloads(by_kind):
        labels = w["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies.values() if selects(p["spec"]["podSelector"], labels)]
        assert covering, f"{name}: no NetworkPolicy selects its pods"
        ports = {c["containerPort"] for c in w["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
        for p in covering:
            assert "Ingress" in p["spec"]["policyTypes"]
            for rule in p["spec"]["ingress"]:
                assert rule.get("from"), f"{name}: an ingress rule open to every source"
                assert {q["port"] for q in rule["ports"]} <= ports
    # the broker accepts only node pods
    (rule,) = policies["gossipnode-broker"]["spec"]["ingress"]
    node_labels = by_kind["StatefulSet"]["gossipnode"]["spec"]["template"]["metadata"]["labels"]
    assert all(selects(f["podSelector"], node_labels) for f in rule["from"])


def test_deploy_readme_exists() -> None:
    text = Path(ROOT / "deploy" / "README.md").read_text()
    assert "kubectl apply -k deploy/k8s" in text and "docker compose up" in text
    assert "gossipnode-broker-auth" in text and "GOSSIPNODE_API_TOKEN" in text
