"""Development and test tooling: run the four services as processes, publish a sample convocation."""
