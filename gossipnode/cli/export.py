"""Write a model (wire tensors) for use elsewhere: safetensors (written here, no dependency) or a
torch `.pt` holding a plain dict of tensors (loadable with `torch.load(path, weights_only=True)`).

safetensors layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
length, a JSON header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}` (padded with spaces to 8 bytes), then the raw little-endian C-order buffers.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

from gossipnode.core.messages import RawTensor
from gossipnode.wire.tensors import from_raw

SAFETENSORS_DTYPES = {"<f4": "F32", "<f2": "F16", "<f8": "F64", "<i8": "I64", "<i4": "I32", "<i2": "I16",
                      "|i1": "I8", "|u1": "U8", "|b1": "BOOL"}


def safetensors_bytes(model: tuple[RawTensor, ...], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for t in model:
        n = len(t.data)
        header[t.name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(bytes(t.data) for t in model)


def write(path: Path, model: tuple[RawTensor, ...], metadata: dict[str, str], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if fmt == "safetensors":
                f.write(safetensors_bytes(model, metadata))
            else:
                import torch
                torch.save({t.name: torch.from_numpy(from_raw(t).copy()) for t in model}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
