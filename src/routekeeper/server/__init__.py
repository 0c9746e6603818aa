"""The HTTP server of a replica: the app factory and the operational endpoints."""
