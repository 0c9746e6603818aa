"""Routing: the routing configuration, signals, the rule trees of decisions, the engine."""
