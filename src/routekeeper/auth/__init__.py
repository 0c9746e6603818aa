"""API keys on the request path: the key check and its cache (``keys``), rate limits."""
