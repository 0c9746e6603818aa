"""The state contract: pure declarations shared by every other layer."""

from routekeeper.contract.classes import (
    ALLOWED_BACKENDS,
    DURABLE_DEFINITION,
    SHARED_DEFINITION,
    BackendKind,
    StateClass,
    is_durable,
    is_shared,
)
from routekeeper.contract.surface import Owner, Surface, SurfaceRegistry
from routekeeper.contract.surfaces import SURFACES

__all__ = [
    "ALLOWED_BACKENDS",
    "DURABLE_DEFINITION",
    "SHARED_DEFINITION",
    "SURFACES",
    "BackendKind",
    "Owner",
    "StateClass",
    "Surface",
    "SurfaceRegistry",
    "is_durable",
    "is_shared",
]
