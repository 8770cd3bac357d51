"""Issue 9 item 7 against a real Mosquitto: another broker client can neither kick a node off
(client ids are random per connection) nor make a replayed or stale last will count; a cleared
announce is restored; the shipped ACL example (deploy/mosquitto-secure.conf +
deploy/mosquitto-acl.conf) starts and keeps a node user off other nodes' announces and inboxes."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from mqtt_broker import Broker, find_mosquitto, mosquitto_fixture  # noqa: F401

from gossipnode.transport.mqtt import MqttTransport
from gossipnode.wire.announce import make_record
from gossipnode.wire.identity import Identity

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import mqtt_broker_client as attack  # noqa: E402

pytestmark = pytest.mark.timeout(90)
NET = "test-net"


async def test_kick_with_the_derivable_client_id_fails(mosquitto) -> None:
    r = await attack.kick(mosquitto.port, 4)
    print(r)
    assert r == {"tries": 4, "victim_disconnected": 0, "observer_took_will": 0}


async def test_replayed_will_is_ignored_and_counted(mosquitto) -> None:
    r = await attack.replay(mosquitto.port, 3)
    print(r)
    assert r["real_will_taken"]                     # the genuine will of the lost connection counts
    assert r["observer_took_replayed_will"] == 0    # replays of it, after the reconnect, do not
    assert r["stale_wills_counted"] >= 3


async def test_cleared_announce_is_restored(mosquitto) -> None:
    r = await attack.clear(mosquitto.port, 2)
    assert r["announce_still_found_1s_later"] == 2


async def test_will_of_an_unannounced_or_older_session_is_ignored(mosquitto) -> None:
    rejected: list[str] = []
    gone: list[bytes] = []
    ido, idv = Identity.generate(), Identity.generate()
    o = MqttTransport(mosquitto.url, ido.node_id, NET, will_grace=0.0)   # the session rules alone
    o.bind(ido, (o.address,), lambda *a: None, gone.append, rejected.append)

    async def h(frame: bytes, reply_to: str | None) -> None:
        return None
    await o.start(h)
    topic = o.announce_topic(idv.node_id)
    old, new = os.urandom(16).hex(), os.urandom(16).hex()
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
            async def put(status: str, session: str, addrs=()) -> None:
                addrs = addrs or ((f"mqtt://{idv.node_id}",) if status == "up" else ())
                await c.publish(topic, make_record(idv, NET, status, session, addrs, ("mqtt",)), qos=1)
                await asyncio.sleep(0.2)
            await put("gone", old)                  # never announced: ignored
            await put("up", new)
            await put("gone", old)                  # older session: ignored
            assert gone == []
            await put("gone", new)                  # the announced session: counts, once
            await put("gone", new)
            assert gone == [idv.public_key]
        assert rejected.count("stale_will") == 3
        assert o.stats["wills"] == 1 and o.stats["stale_wills"] == 3
    finally:
        await o.stop()


# ---- the ACL example ---------------------------------------------------------------------------
def _secure_conf(workdir: Path, port: int, tls: bool) -> str:
    """deploy/mosquitto-secure.conf with this test's port and files (nothing else changed)."""
    out = []
    for line in (ROOT / "deploy" / "mosquitto-secure.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "password_file":
            line = f"password_file {workdir / 'passwd'}"
        elif key == "acl_file":
            line = f"acl_file {ROOT / 'deploy' / 'mosquitto-acl.conf'}"
        elif key in ("certfile", "keyfile"):
            line = f"{key} {workdir / ('server.crt' if key == 'certfile' else 'server.key')}" if tls else ""
        out.append(line)
    if os.geteuid() == 0:
        out.append("user root")   # as root, mosquitto would drop to user "mosquitto" (no access here)
    return "\n".join(out) + "\n"


@pytest.fixture
def secure_broker(tmp_path):
    exe = find_mosquitto()
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if exe is None or not Path(passwd).exists():
        pytest.skip("mosquitto / mosquitto_passwd not found (Debian: apt-get install -y mosquitto)")
    tls = shutil.which("openssl") is not None
    if tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt"),
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
    ids = [Identity.generate() for _ in range(2)]
    (tmp_path / "passwd").write_text("")
    for i in ids:
        subprocess.run([passwd, "-b", str(tmp_path / "passwd"), i.node_id, "pw-" + i.node_id],
                       check=True, capture_output=True, timeout=30)
    b = Broker(exe, tmp_path)
    b.conf.write_text(_secure_conf(tmp_path, b.port, tls))
    b.start()
    scheme = "mqtts" if tls else "mqtt"
    try:
        yield b, ids, f"{scheme}://127.0.0.1:{b.port}", str(tmp_path / "server.crt") if tls else ""
    finally:
        b.stop()


async def test_acl_example_confines_each_node_user(secure_broker) -> None:
    broker, (ida, idb), url, ca = secure_broker
    got: dict[str, list] = {"a": [], "b": [], "peers_a": [], "peers_b": []}

    def inbox(name: str):
        async def h(frame: bytes, reply_to: str | None) -> None:
            got[name].append(frame)
        return h
    ta = MqttTransport(url, ida.node_id, NET, username=ida.node_id, password="pw-" + ida.node_id, ca_file=ca)
    tb = MqttTransport(url, idb.node_id, NET, username=idb.node_id, password="pw-" + idb.node_id, ca_file=ca)
    ta.bind(ida, (ta.address,), lambda addrs, pk: got["peers_a"].append(pk), lambda pk: None)
    tb.bind(idb, (tb.address,), lambda addrs, pk: got["peers_b"].append(pk), lambda pk: None)
    await ta.start(inbox("a"))
    await tb.start(inbox("b"))
    try:
        assert ta.connected and tb.connected, broker.log()
        assert await attack._until(lambda: idb.public_key in got["peers_a"]
                                   and ida.public_key in got["peers_b"], 5), broker.log()
        await ta.send(tb.address, b"a to b")            # any node may write any inbox
        assert await attack._until(lambda: got["b"] == [b"a to b"], 5)

        tls = {"tls_context": __import__("ssl").create_default_context(cafile=ca)} if ca else {}
        # anonymous clients are refused
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5,
                                      timeout=5, **tls):
                pass
        # node a's user cannot write b's announce topic, nor read b's inbox
        async with aiomqtt.Client("127.0.0.1", broker.port, username=ida.node_id,
                                  password="pw-" + ida.node_id, protocol=aiomqtt.ProtocolVersion.V5,
                                  timeout=5, **tls) as spy:
            await spy.subscribe(tb.inbox_topic(idb.node_id), qos=1)
            sniffed: list[bytes] = []

            async def listen() -> None:
                async for m in spy.messages:
                    sniffed.append(bytes(m.payload))
            listener = asyncio.ensure_future(listen())
            forged = make_record(ida, NET, "gone", "0" * 32, (), ())
            for payload in (b"", forged):
                await spy.publish(tb.announce_topic(idb.node_id), payload, qos=1, retain=True)
            await tb.send(tb.address, b"b to itself")
            assert await attack._until(lambda: b"b to itself" in got["b"], 5)
            await asyncio.sleep(0.5)
            listener.cancel()
            assert sniffed == []
        rec = await _retained_with(broker.port, ida, tb.announce_topic(idb.node_id), tls)
        assert rec is not None and json.loads(rec)["status"] == "up" and json.loads(rec)["node_id"] == idb.node_id
        assert tb.stats["announce_restored"] == 0       # nothing reached b's topic
    finally:
        await ta.stop()
        await tb.stop()


async def _retained_with(port: int, ident: Identity, topic: str, tls: dict) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", port, username=ident.node_id, password="pw-" + ident.node_id,
                              protocol=aiomqtt.ProtocolVersion.V5, timeout=5, **tls) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for m in c.messages:
                    return bytes(m.payload)
        except TimeoutError:
            return None
    return None
