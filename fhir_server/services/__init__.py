"""The service layer: THE write path and the reads, shared by every door."""
