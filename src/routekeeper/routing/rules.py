"""Evaluate a decision's rule tree against the signals that matched."""

from __future__ import annotations

from collections.abc import Set

from routekeeper.routing.config import Rule, RuleAll, RuleAny, RuleNot


def rule_matches(rule: Rule, matched: Set[str]) -> bool:
    if isinstance(rule, str):
        return rule in matched
    if isinstance(rule, RuleAll):
        return all(rule_matches(r, matched) for r in rule.all)
    if isinstance(rule, RuleAny):
        return any(rule_matches(r, matched) for r in rule.any)
    assert isinstance(rule, RuleNot)
    return not rule_matches(rule.not_, matched)
