"""Mailer service: e-mails each patient the link to their sealed message."""
