"""The FHIR REST door: thin FastAPI handlers that parse, call a service and render."""
