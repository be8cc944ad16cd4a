"""Hospital gateway: HL7 v2 over MLLP, FHIR R4 and CSV from the hospital systems in, statuses and requests back."""
