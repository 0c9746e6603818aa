"""routekeeper: an OpenAI-compatible LLM router with an explicit state contract."""

__version__ = "0.1.0"
