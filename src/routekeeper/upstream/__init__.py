"""Clients of the models the router forwards to."""
