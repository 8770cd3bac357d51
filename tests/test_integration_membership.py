"""Authenticated membership over real HTTP: a fresh key sends forged LEAVE records, a record of
its own with last_active = 2^63 - 1 and huge rounds to a live 3-node network. The nodes keep their
views, no round estimate jumps, nobody leaves early, and rounds keep completing."""
from __future__ import annotations

import time
import urllib.request

import pytest

from conftest import get_json, statuses, wait_for
from gossipnode.core.messages import Advertise, Ping, Status, ViewRecord, ViewShare
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.records import Ed25519RecordAuth

pytestmark = pytest.mark.slow

NET = "gossipnode"
HUGE = 2**63 - 1
ARGS = ["--mnist1d-samples", "2000", "--bootstrap-wait", "2", "--ping-timeout", "2",
        "--aggregation-timeout", "6", "--round-timeout", "15", "--sample-size", "3", "--rounds", "40"]


def _post(url: str, frame: bytes) -> int:
    req = urllib.request.Request(url + "/v1/messages", data=frame, method="POST",
                                 headers={"Content-Type": "application/x-gossipnode"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_forged_membership_and_huge_rounds_change_nothing(node_procs) -> None:
    nodes = node_procs(3, ARGS)
    for n in nodes:
        n.wait_up()
    wait_for(lambda: all(s and s["round"] >= 3 for s in statuses(nodes)), 180, "round 3", nodes)
    peers = {p["public_key"]: p for n in nodes for p in get_json(n.url + "/v1/peers")["peers"]}
    assert len(peers) == 3

    mallory = Identity.generate()
    auth = Ed25519RecordAuth(mallory, NET)
    seq = time.time_ns() // 1000
    forged = tuple(ViewRecord(bytes.fromhex(pk), HUGE, p["index"] + 1, Status.LEAVE, tuple(p["addresses"]),
                              mallory.sign(b"\0" * 32)) for pk, p in peers.items())
    moved = tuple(ViewRecord(bytes.fromhex(pk), p["last_active_round"] + 1, p["index"] + 1, Status.JOIN,
                             ("http://127.0.0.1:9",), b"\7" * 64) for pk, p in peers.items())
    own_lie = auth.sign(ViewRecord(mallory.public_key, HUGE, 1, Status.JOIN, ("http://127.0.0.1:9",)))
    frames = [ViewShare(0, forged), ViewShare(0, moved), ViewShare(HUGE, (own_lie,)),
              ViewShare(0, (own_lie,)), Advertise.of(own_lie), Ping(HUGE, 1)]
    codes = []
    for n in nodes:
        for msg in frames:
            seq += 1
            codes.append(_post(n.url, encode(mallory, NET, seq, time.time(), msg)))
    assert 400 in codes   # named rejections are answered 400

    r0 = max(s["round"] for s in statuses(nodes))
    wait_for(lambda: min(s["round"] for s in statuses(nodes)) >= r0 + 3, 180, "3 more rounds", nodes)
    st = statuses(nodes)
    for n, s in zip(nodes, st, strict=True):
        assert s["peers_known"] == 2 and not s["finished"], s
        assert s["round"] < 40
        view = {p["public_key"]: p for p in get_json(n.url + "/v1/peers")["peers"]}
        assert mallory.public_key.hex() not in view
        for pk, p in view.items():
            assert p["status"] == "join" and p["addresses"] == peers[pk]["addresses"]
        rej = s["messages_rejected"]
        assert rej.get("bad_record_sig", 0) >= 1 and rej.get("round_out_of_range", 0) >= 1, rej
        print(n.url, s["round"], rej)
