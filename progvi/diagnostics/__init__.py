"""Diagnostics of estimators: their variance and cost, and a choice of strategies from them."""

from .choose import StrategyChoice as StrategyChoice
from .choose import choose_strategies as choose_strategies
from .compare import CandidateStats as CandidateStats
from .compare import StrategyComparison as StrategyComparison
from .compare import compare_strategies as compare_strategies

__all__ = [
    "CandidateStats",
    "StrategyChoice",
    "StrategyComparison",
    "choose_strategies",
    "compare_strategies",
]
