"""Model exchange: outbound models as deltas, inbound models checked before anything of them is
kept (base fetch, delta, architecture, hash, sanity), base requests answered within a budget.

Returns a model or a rejection reason; the node decides what the core hears."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from gossipnode.core.messages import ModelData, ModelKind, ModelMsg
from gossipnode.learn.learner import Learner, Model, to_state
from gossipnode.learn.sanity import NON_FINITE, check_model, non_finite
from gossipnode.transport.http import BUSY
from gossipnode.wire.tensors import apply_delta, model_hash

from .store import ModelStore

BIG = 4 << 20   # models above this many bytes are hashed and checked in a worker thread
# Frames waiting for the base of their delta (SPEC §15.1): at most this many, and at most the
# frame size limit in tensor bytes; beyond that they are refused `busy` (HTTP 503, retried).
PENDING_BASE_FRAMES = 16
# MODEL_REQUEST per peer: a token bucket of this many per --ping-timeout, burst BURST.
MODEL_REQUESTS_PER_PING = 2
MODEL_REQUEST_BURST = 4
MAX_BUCKETS = 4096


def nbytes(model: Model) -> int:
    return sum(len(t.data) for t in model)


class Rejected(Exception):
    """An inbound model is unusable: `reason` (counted by the node), `detail` for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


class ModelExchange:
    def __init__(self, store: ModelStore, learner: Learner, max_size: int, ping_timeout: float,
                 min_rate: float, max_update_norm: float) -> None:
        self.store = store
        self.learner = learner
        self.max_size = max_size
        self.ping_timeout = ping_timeout
        self.min_rate = min_rate   # bytes/s: the slowest transfer waited for
        self.max_update_norm = max_update_norm
        self.fetches: dict[bytes, asyncio.Future] = {}
        self.pending_frames = 0   # frames waiting for a base (bounded: PENDING_BASE_FRAMES)
        self.pending_bytes = 0    # their tensor bytes (bounded: max_size)
        self._tokens: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def status(self) -> dict[str, int]:
        return {"pending_base_frames": self.pending_frames, "pending_base_bytes": self.pending_bytes}

    # ---- outbound -------------------------------------------------------------------------
    def attach_tensors(self, msg: ModelMsg) -> ModelMsg | None:
        """A TRAINED model travels as its delta when we hold its base; others whole."""
        if msg.kind == ModelKind.TRAINED:
            d = self.store.delta_of(msg.model)
            if d is not None:
                return replace(msg, base=d[0], tensors=d[1])
        model = self.store.get(msg.model)
        return None if model is None else replace(msg, base=None, tensors=model)

    def answer_request(self, h: bytes, sender: bytes, now: float) -> ModelData | None:
        """MODEL_DATA for a member's MODEL_REQUEST; None: over the sender's rate (rate_limited)."""
        if not self._take_token(sender, now):
            return None
        return ModelData(h, self.store.get(h) or ())

    def _take_token(self, pk: bytes, now: float) -> bool:
        rate = MODEL_REQUESTS_PER_PING / max(self.ping_timeout, 1e-3)
        tokens, t = self._tokens.pop(pk, (float(MODEL_REQUEST_BURST), now))
        tokens = min(float(MODEL_REQUEST_BURST), tokens + (now - t) * rate)
        ok = tokens >= 1.0
        self._tokens[pk] = (tokens - 1.0 if ok else tokens, now)
        while len(self._tokens) > MAX_BUCKETS:
            self._tokens.popitem(last=False)
        return ok

    # ---- bases ----------------------------------------------------------------------------
    def hold(self, msg: ModelMsg) -> str | None:
        """Room for one more frame waiting for its base, or BUSY; `release` frees it."""
        size = nbytes(msg.tensors)
        if self.pending_frames >= PENDING_BASE_FRAMES or self.pending_bytes + size > self.max_size:
            return BUSY
        self.pending_frames += 1
        self.pending_bytes += size
        return None

    def release(self, msg: ModelMsg) -> None:
        self.pending_frames -= 1
        self.pending_bytes -= nbytes(msg.tensors)

    def on_model_data(self, msg: ModelData) -> tuple[str, str] | None:
        """A base we asked for arrived: (reason, detail) if it is unusable."""
        fut = self.fetches.get(msg.model)
        if fut is None or fut.done():
            return "unsolicited_model", ""
        if not msg.tensors:
            fut.set_result(None)
            return None
        if model_hash(msg.tensors) != msg.model:
            return "hash_mismatch", "model data"
        if (why := self.learner.compatible(msg.tensors)) is not None:
            return "incompatible_model", why
        if (bad := non_finite(to_state(msg.tensors))) is not None:
            return NON_FINITE, f"model data: tensor {bad!r}"
        fut.set_result(msg.tensors)
        return None

    def fetch_timeout(self, size: int) -> float:
        """How long a frame waits for its base: two ping time-outs plus the base's transfer at
        the minimum rate (the base is a whole model of our architecture: at least as big as our
        own, and as the delta; a compressed delta is much smaller than its base)."""
        size = max(size, nbytes(self.learner.initial))
        return 2 * self.ping_timeout + size / self.min_rate

    async def fetch(self, h: bytes, size: int, request: Callable[[], object]) -> Model | None:
        """The model `h`, asked for once (`request` sends the MODEL_REQUEST) however many wait."""
        fut = self.fetches.get(h)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.fetches[h] = fut
            request()   # the node spawns the MODEL_REQUEST send (a tracked task)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=self.fetch_timeout(size))
        except TimeoutError:
            if not fut.done():
                fut.set_result(None)
            return None
        finally:
            if self.fetches.get(h) is fut and fut.done():
                self.fetches.pop(h, None)

    # ---- inbound --------------------------------------------------------------------------
    async def verify(self, msg: ModelMsg, request: Callable[[], object],
                     current: bytes) -> tuple[Model, bytes]:
        """The model a message carries, or Rejected: base (fetched with `request` if missing),
        delta, architecture, hash, then sanity (finite, an update of bounded size against its
        base, else against our `current` model; SPEC section 15)."""
        size = nbytes(msg.tensors)
        base: Model | None = None
        if msg.base is None:
            model = msg.tensors
        else:
            base = self.store.get(msg.base) or await self.fetch(msg.base, size, request)
            if base is None:
                raise Rejected("missing_base", msg.base.hex()[:16])
            self.store.put(base, msg.base)
            try:
                model = apply_delta(base, msg.tensors)
            except ValueError as e:
                raise Rejected(getattr(e, "reason", "bad_delta"), str(e)) from None  # or bad_encoding
        if (why := self.learner.compatible(model)) is not None:
            raise Rejected("incompatible_model", why)
        h = await asyncio.to_thread(model_hash, model) if size > BIG else model_hash(model)
        if h != msg.model:
            raise Rejected("hash_mismatch", "model")
        reference = base if base is not None else self.store.get(current)
        bad = (await asyncio.to_thread(self._problem, model, reference) if size > BIG
               else self._problem(model, reference))
        if bad is not None:
            raise Rejected(*bad)
        return model, h

    def _problem(self, model: Model, reference: Model | None) -> tuple[str, str] | None:
        ref = to_state(reference) if reference is not None else None
        return check_model(to_state(model), ref, self.max_update_norm)
