"""Access portal: the patient's secure message page, SMS code check and document download."""
