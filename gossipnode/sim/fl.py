"""Federated learning baseline: one server, FedAvg (the pipeline) over a random sample each round."""
from __future__ import annotations

import math
from typing import Any

from .engine import Engine


class FLSim(Engine):
    name = "fl"

    def extra_nodes(self) -> int:
        return 1

    def setup(self) -> None:
        self.server = self.n_total - 1
        self.global_h = self.initial
        self.round = 0
        self.sample: list[int] = []
        self.received: dict[int, bytes] = {}
        self.aggregating = False

    def clients(self) -> list[int]:
        return [i for i in range(self.next_join) if self.alive[i]] + self.sybil_ids

    def begin(self) -> None:
        self._start_round()

    def _start_round(self) -> None:
        if self._stop:
            return
        self.round += 1
        r = self.round
        pool = self.clients()
        self.sample = self.rng.sample(pool, min(self.cfg.sample_size, len(pool)))
        self.received = {}
        self.aggregating = False
        for j in self.sample:
            self.send(self.server, j, self.sizes.full_model, "model_global", self._client_recv, j, r, self.global_h)
        self.after(self.cfg.round_timeout, self._timeout, r)

    def _client_recv(self, j: int, r: int, h: bytes) -> None:
        self.after(self.train_time(j), self._client_trained, j, r, h)

    def _client_trained(self, j: int, r: int, h: bytes) -> None:
        if not self.alive[j]:
            return
        h2 = self.train(j, h)
        self.send(j, self.server, self.sizes.delta_model, "model_update", self._server_recv, j, r, h2)

    def _server_recv(self, j: int, r: int, h: bytes) -> None:
        if r != self.round or self.aggregating:
            return
        self.received[j] = h
        if len(self.received) >= max(1, math.ceil(len(self.sample) * self.cfg.success_fraction - 1e-9)):
            self._aggregate(r)

    def _timeout(self, r: int) -> None:
        if r != self.round or self.aggregating:
            return
        self.events["round_timeout"] += 1
        if self.received:
            self._aggregate(r)
        else:
            self._start_round()

    def _aggregate(self, r: int) -> None:
        self.aggregating = True
        contribs = sorted(self.received.items())
        self.after(self.cfg.agg_time * len(contribs), self._aggregated, r, contribs)

    def _aggregated(self, r: int, contribs: list[tuple[int, bytes]]) -> None:
        self.global_h = self.aggregate(self.server, r, contribs)
        self.maybe_record(r)
        self._start_round()

    def rounds_done(self) -> int:
        return self.round - (0 if self.aggregating or self._stop else 1)

    def eval_models(self) -> list[bytes]:
        return [self.global_h]

    def referenced(self) -> set[bytes]:
        return {self.global_h, *self.received.values()}

    def extra_metrics(self) -> dict[str, Any]:
        return {}
