"""Search: query parsing, typed values and the indexer that extracts them at write time."""
