"""Key store: the period keys letters are sealed under, kept outside the databases, destroyed on time."""
