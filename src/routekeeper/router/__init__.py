"""The OpenAI-compatible router surface (/v1)."""
