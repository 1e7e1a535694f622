"""The non-FHIR doors (HL7 v2 MLLP, DICOM SCP, webhooks); each calls the core's write path."""
