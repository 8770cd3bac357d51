"""Aggregation: one pipeline, filter -> combine -> correct, for every way models are merged."""

from .combine import MeanCombiner, MedianCombiner, TrimmedMeanCombiner
from .correct import AlwaysVarianceCorrection, NoCorrection, VarianceCorrection, merge_correlation
from .filters import (
    FoolsGoldFilter,
    KrumFilter,
    MultiKrumFilter,
    NoFilter,
    SybilWallFilter,
    foolsgold_weights,
)
from .history import StoredHistory, HistoryStore
from .pipeline import Pipeline, available_stages, build_pipeline
from .registry import register
from .types import AggregateResult, AggregationError, Contribution

__all__ = [
    "AggregateResult",
    "AlwaysVarianceCorrection",
    "AggregationError",
    "Contribution",
    "FoolsGoldFilter",
    "StoredHistory",
    "HistoryStore",
    "KrumFilter",
    "MeanCombiner",
    "MedianCombiner",
    "MultiKrumFilter",
    "NoCorrection",
    "NoFilter",
    "Pipeline",
    "SybilWallFilter",
    "TrimmedMeanCombiner",
    "VarianceCorrection",
    "available_stages",
    "build_pipeline",
    "foolsgold_weights",
    "merge_correlation",
    "register",
]
