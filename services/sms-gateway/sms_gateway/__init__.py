"""SMS gateway: texts verification codes through an SMS provider's HTTP API."""
