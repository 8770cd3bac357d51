"""Issue 9, "0 server errors under fuzzing and schemathesis": a live node process (with a peer,
so it is mid-round) gets schemathesis' generated requests on every REST route of
`openapi.json` (all but `/v1/messages`, whose binary frames schemathesis cannot make), then
garbage, bit-flipped and truncated frames on `/v1/messages`; no answer is a 5xx, every bad
frame is a counted rejection, and the node keeps learning."""
from __future__ import annotations

import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from gossipnode.core.messages import Advertise, ModelKind, ModelMsg, ModelRequest, Ping, Pong, Status, ViewShare
from gossipnode.wire import Identity, encode, to_raw

NET = "gossipnode"   # the default network id: frames must get past the network check to be fuzzed deeper


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _frames() -> list[bytes]:
    ident = Identity.from_seed(b"\x09" * 32)
    t = (to_raw("w", np.ones((8, 8), np.float32)),)
    msgs = [Advertise(5, 2, Status.JOIN, ("http://127.0.0.1:9",), b"\x00" * 64), ViewShare(7, ()),
            Ping(1, 3), Pong(1, 0), ModelMsg(3, ModelKind.TRAINED, b"\x01" * 32, (), b"\x02" * 32, t),
            ModelMsg(4, ModelKind.AGGREGATED, b"\x01" * 32, (), None, t), ModelRequest(b"\x03" * 32)]
    return [encode(ident, NET, i + 1, time.time(), m) for i, m in enumerate(msgs)]


def test_no_server_error_under_schemathesis_and_frame_fuzzing(node_procs) -> None:
    nodes = node_procs(2, ["--rounds", "100000"])
    for n in nodes:
        n.wait_up()
    n = nodes[0]
    st = Path(sys.executable).with_name("st")
    r = subprocess.run([str(st), "run", f"{n.url}/openapi.json", "--checks", "not_a_server_error",
                        "--max-examples", "25", "--exclude-path", "/v1/messages",   # its binary frames: fuzzed below
                        "--request-timeout", "20", "--generation-deterministic", "--no-color"],
                       capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:] + "\n" + n.log()[-3000:]
    assert "generated" in out and "0 generated" not in out, out[-3000:]   # it really ran the routes
    before = n.status()
    rejected0 = sum(before.get("messages_rejected", {}).values())
    rnd = random.Random(7)
    valid = _frames()
    codes: dict[int, int] = {}
    sent = 0
    for i in range(600):
        kind = i % 3
        if kind == 0:
            body = rnd.randbytes(rnd.randrange(0, 400))
        else:
            data = bytearray(rnd.choice(valid))
            if kind == 1:
                for _ in range(rnd.randrange(1, 4)):
                    j = rnd.randrange(len(data))
                    data[j] ^= 1 << rnd.randrange(8)
            else:
                data = data[:rnd.randrange(len(data))]
            body = bytes(data)
        c = _post(n.url + "/v1/messages", body)
        codes[c] = codes.get(c, 0) + 1
        sent += 1
    print(f"schemathesis: {[ln.strip() for ln in out.splitlines() if 'generated' in ln]}; frames: {codes}")
    assert not [c for c in codes if c >= 500], codes
    after = n.status()   # still up
    # every 400 is a counted rejection
    assert sum(after.get("messages_rejected", {}).values()) - rejected0 >= codes.get(400, 0) * 0.9, (codes, after)
    # and the node kept learning: rounds advance after the fuzzing
    r0 = after["round"]
    deadline = time.monotonic() + 60
    while n.status()["round"] <= r0:
        assert time.monotonic() < deadline, n.log()[-3000:]
        time.sleep(0.5)
