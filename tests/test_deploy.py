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
    return {k: v for k, v in compose["services"].items() if k.startswith("node")}


def test_compose_file_is_valid_and_complete(compose) -> None:
    services = compose["services"]
    nodes = _nodes(compose)
    assert "broker" in services and len(nodes) >= 4
    assert services["broker"]["image"].startswith("eclipse-mosquitto")
    assert any("deploy/mosquitto.conf" in v for v in services["broker"]["volumes"])
    shards, published = set(), set()
    for name, svc in nodes.items():
        cmd = svc["command"]
        shard = cmd[cmd.index("--shard") + 1]
        i, n = shard.split("/")
        assert int(n) == len(nodes)
        shards.add(int(i))
        assert svc["environment"]["GOSSIPNODE_BROKER"] == "mqtt://broker:1883"
        assert "mqtt" in svc["environment"]["GOSSIPNODE_TRANSPORT"]
        assert "/v1/status" in " ".join(svc["healthcheck"]["test"])
        (port,) = svc["ports"]
        assert int(port["target"]) == NODE_PORT
        published.add(int(port["published"]))
        (vol,) = svc["volumes"]
        vol_name = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
        assert vol_name in compose["volumes"], f"{name}: state volume {vol_name} is not a named volume"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert shards == set(range(len(nodes))) and len(published) == len(nodes)
    prom = services.get("prometheus")
    if prom is not None:
        targets = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        listed = {t for sc in targets["scrape_configs"] for c in sc["static_configs"] for t in c["targets"]}
        assert listed == {f"{n}:{NODE_PORT}" for n in nodes}


def test_dockerfile_has_cpu_default_and_cuda_switch() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "ARG FLAVOR=cpu" in text and "FROM base-${FLAVOR}" in text
    assert "https://download.pytorch.org/whl/cpu" in text and "nvidia/cuda" in text
    assert "ENTRYPOINT [\"gossipnode\"]" in text and "/v1/status" in text


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
def _k8s_docs() -> list[dict]:
    docs = []
    for f in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _port_names(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def test_k8s_manifests_parse_and_are_consistent() -> None:
    docs = _k8s_docs()
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in docs)
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
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
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert int(env["GOSSIPNODE_PORT"]) == _port_names(c)["http"] == NODE_PORT
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/v1/status", "port": "http"}
        assert "requests" in c["resources"] and "cpu" in c["resources"]["requests"]
        broker = env["GOSSIPNODE_BROKER"].split("://")[1]
        bhost, bport = broker.split(":")
        assert bhost in services and any(p["port"] == int(bport) for p in services[bhost]["spec"]["ports"])
        mounts = {m["name"] for m in c["volumeMounts"]}
        assert mounts <= {t["metadata"]["name"] for t in ss["spec"]["volumeClaimTemplates"]}
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
    cm = broker["spec"]["volumes"][0]["configMap"]["name"]
    assert cm in configmaps and "listener 1883" in configmaps[cm]["data"]["mosquitto.conf"]
    assert _port_names(broker["spec"]["containers"][0])["mqtt"] == 1883


def test_deploy_readme_exists() -> None:
    text = Path(ROOT / "deploy" / "README.md").read_text()
    assert "kubectl apply" in text and "docker compose up" in text
