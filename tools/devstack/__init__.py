"""Development and test tooling: run the services as processes, publish a sample convocation."""
