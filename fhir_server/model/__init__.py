"""JSON resource helpers (stdlib only): ids, instants, OperationOutcome and Bundle builders."""
