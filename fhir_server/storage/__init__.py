"""Resource storage: the ``ResourceStore`` protocol and its backends."""
