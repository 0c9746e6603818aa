"""API keys for a benchmark server with ``auth.mode: api_key``: made with ``routekeeper keys
create`` on its configuration and workspace before it starts (as an operator would)."""

from __future__ import annotations

AUTH_ENV = {"ROUTEKEEPER_AUTH__MODE": "api_key"}
