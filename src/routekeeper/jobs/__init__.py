"""Durable workflow jobs: kinds, the runner (job slots of a replica), the service, wake-ups."""
