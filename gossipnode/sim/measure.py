"""The simulator's measurements, mixed into `Engine`: evaluation rows every few rounds or
seconds, and the run's summary."""
from __future__ import annotations

from typing import Any

import numpy as np


class Measure:
    # ---- measurement --------------------------------------------------------------------------
    def record(self, round_: int | None = None) -> None:
        hs = self.eval_models()
        res = [self.evaluate(h) for h in hs]
        honest_ids = [i for i in range(self.n_honest_cap) if i < self.next_join]
        alive_honest = int(self.alive[: self.n_honest_cap].sum())
        sent = self.bytes_sent[: self.n_honest_cap][: self.next_join]
        row: dict[str, Any] = {
            "t": round(float(self.now), 4),
            "round": self.rounds_done() if round_ is None else round_,
            "acc_mean": float(np.mean([r[0] for r in res])) if res else None,
            "acc_min": float(np.min([r[0] for r in res])) if res else None,
            "acc_max": float(np.max([r[0] for r in res])) if res else None,
            "loss_mean": float(np.mean([r[1] for r in res])) if res else None,
            # only where an attack is configured (or asked for as a baseline: eval_attack)
            "attack_rate": (float(np.mean([r[2][0] for r in res])) if res and self.measured else None),
            "evaluated": len(res),
            "bytes_total": int(self.bytes_sent.sum()),
            "bytes_per_node": float(sent.mean()) if len(honest_ids) else 0.0,
            "active_nodes": alive_honest,
        }
        if res and len(self.measured) > 1:
            row["attack_rates"] = {a.kind: float(np.mean([r[2][m] for r in res]))
                                   for m, a in enumerate(self.measured)}
        row.update(self.extra_metrics())
        self.series.append(row)
        if self.cfg.stop_at_target and row["acc_mean"] is not None and row["acc_mean"] >= self.cfg.target:
            self._stop = True

    def maybe_record(self, round_: int) -> None:
        """Evaluate every ``eval_rounds`` rounds; stop once ``cfg.rounds`` rounds are done."""
        if self.cfg.eval_every <= 0 and round_ >= self._next_eval:
            self.record(round_)
            self._next_eval = (round_ // self.eval_rounds + 1) * self.eval_rounds
        if self.cfg.rounds is not None and round_ >= self.cfg.rounds and not self._stop:
            if self.series[-1]["round"] != round_:
                self.record(round_)
            self._stop = True

    def _time_eval(self) -> None:
        self.record()
        self.after(self.cfg.eval_every, self._time_eval)


    def result(self, wall: float) -> dict[str, Any]:
        target = self.cfg.target
        hit = next((r for r in self.series if r["acc_mean"] is not None and r["acc_mean"] >= target), None)
        started = self.next_join
        sent = self.bytes_sent[:started]
        final = self.series[-1] if self.series else {}
        summary = {
            "protocol": self.name,
            "virtual_time_s": round(self.now, 3),
            "wall_s": round(wall, 2),
            "rounds_completed": self.rounds_done(),
            "final_acc_mean": final.get("acc_mean"),
            "final_acc_min": final.get("acc_min"),
            "final_attack_rate": final.get("attack_rate"),
            "best_acc_mean": max((r["acc_mean"] for r in self.series if r["acc_mean"] is not None),
                                 default=None),
            "target": target,
            "time_to_target_s": hit["t"] if hit else None,
            "round_to_target": hit["round"] if hit else None,
            "bytes_to_target": hit["bytes_total"] if hit else None,
            "bytes_total": int(self.bytes_sent.sum()),
            "bytes_per_honest_node_mean": float(sent.mean()) if started else 0.0,
            "bytes_per_honest_node_max": int(sent.max()) if started else 0,
            "messages": dict(self.msg_count),
            "message_bytes": dict(self.msg_bytes),
            "messages_dropped": self.dropped,
            "trainings": self.trainings,
            "aggregations": self.aggregations,
            "model_bytes": self.sizes.model_bytes,
            "compress": str(self.compress_spec),
            "churn_events": dict(self.churn_counts),
            **({"partitions": self.partitions, "partition_dropped": self.partition_dropped}
               if self.partitions else {}),
            "protocol_events": dict(self.events),
            "models_rejected": dict(self.models_rejected),
            "aggregation_fallbacks": dict(self.fallbacks),
            # honest round models' loss rise on the receiver's data, over all adoption checks
            "adopt_rise": ({"checks": len(self.adopt_rises),
                            "p99": float(np.quantile(self.adopt_rises, 0.99)),
                            "max": float(max(self.adopt_rises))} if self.adopt_rises else None),
            "sybils": self.n_sybils,
            # weight tensors the default correction (vc) rescaled, over all nodes' merges
            "vc_corrected": sum(getattr(p.corrector, "corrected", 0) for p in self._pipelines.values()),
            "active_nodes_end": int(self.alive[: self.n_honest_cap].sum()),
        }
        return {"config": self.cfg.to_dict(), "summary": summary, "series": self.series}
