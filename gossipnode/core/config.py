"""MoDeST protocol parameters (ALGORITHMS.md section 1)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModestConfig:
    sample_size: int = 10             # s: trainers per round
    aggregators: int = 1              # a: aggregators per round
    success_fraction: float = 1.0     # sf: aggregate once s_eff * sf updates arrived
    ping_timeout: float = 5.0         # give up on a candidate after this many seconds
    ping_interval: float = 1.0        # re-send an unanswered ping this often
    inactivity_threshold: int = 50    # tau: a peer silent for more rounds leaves the sample
    aggregation_timeout: float = 30.0  # aggregate what arrived (>= 1 update) after this wait
    round_timeout: float = 60.0       # no progress after sending: redo the walk and re-send
    max_retries: int = 3              # of the round_timeout re-sends
    bootstrap_wait: float = 3.0       # wait at least this long for peers before round 1
    bootstrap_timeout: float = 30.0   # start round 1 after this even if bootstrap peers are silent
    fresh_contact: float = 1.0        # a peer heard from this recently counts as reachable
    prewalk: bool = True              # ping the next send's candidates while training / aggregating
    keepalive: bool = True            # keep-alive pings and sparse idle probes (SPEC 15.7); off only to measure
    max_rounds: int | None = None     # leave after the model of round max_rounds + 1 exists
    stall_timeout: float | None = None  # idle this long without a new round: check, maybe restart
    # Membership bounds (SPEC "Membership records"): hearsay moves R at most this far above
    # R_v (None: tau); at most max_peers in the view and max_pending joiners being probed.
    round_window: int | None = None
    max_peers: int = 10_000
    max_pending: int = 256
    join_pow: int = 0                 # a joiner's key needs this many leading zero bits of work (0: off)
    # Role checks (SPEC 15.1): a sender may be this many places behind the s (a) reachable
    # candidates of the receiver's order and still count as sampled (views differ by a few entries).
    role_slack: int = 2
    accept_quorum: int = 1            # q: adopt an AGGREGATED model once q aggregators sent its hash
    # Partitions (SPEC 15.5): peers out of reach (and inactive or departed ones) are probed with
    # a back-off doubling from 2 x ping_timeout up to this many seconds.
    probe_max: float = 20.0

    def __post_init__(self) -> None:
        if self.sample_size < 1 or self.aggregators < 1:
            raise ValueError("sample_size and aggregators must be >= 1")
        if not 0 < self.success_fraction <= 1:
            raise ValueError("success_fraction must be in (0, 1]")
        if self.ping_timeout <= 0 or self.ping_interval <= 0:
            raise ValueError("ping timeout and interval must be > 0")
        if self.stall_timeout is not None and self.stall_timeout <= 0:
            raise ValueError("stall_timeout must be > 0 (None: off)")
        if self.inactivity_threshold < 0:
            raise ValueError("inactivity_threshold must be >= 0")
        if self.round_window is not None and self.round_window < 1:
            raise ValueError("round_window must be >= 1 (None: tau)")
        if not 0 <= self.join_pow <= 40:
            raise ValueError("join_pow must be in [0, 40] bits")
        if self.max_peers < 1 or self.max_pending < 1:
            raise ValueError("max_peers and max_pending must be >= 1")
        if self.probe_max <= 0:
            raise ValueError("probe_max must be > 0")
        if self.role_slack < 0:
            raise ValueError("role_slack must be >= 0")
        if not 1 <= self.accept_quorum <= self.aggregators:
            raise ValueError(f"accept_quorum must be in [1, aggregators={self.aggregators}], "
                             f"got {self.accept_quorum}")

    @property
    def window(self) -> int:
        """round_window, defaulting to tau (and at least 1)."""
        return self.round_window if self.round_window is not None else max(1, self.inactivity_threshold)


def stall_timeout_from(flag: float, round_timeout: float) -> float | None:
    """The user-facing `--stall-timeout` value: < 0 off, 0 the default of 3 x round_timeout."""
    if flag < 0:
        return None
    return flag or 3 * round_timeout
