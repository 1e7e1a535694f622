"""Custom FHIR ``$operations``, one module per bounded context.

The core loads this package by name at start-up (``OperationRegistry.load``) and calls
``register``; it never imports the modules here, which use only its service layer.
"""

from __future__ import annotations

from fhir_server.services.operations import OperationRegistry
from operations import everything, terminology


def register(registry: OperationRegistry) -> None:
    """Register every operation of this package."""
    everything.register(registry)
    terminology.register(registry)
