"""Code systems and value sets (ICD-10, UCUM, FHIR core) and the terminology operations."""
