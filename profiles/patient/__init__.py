"""Patient context: patients, visits and admissions, triage."""
