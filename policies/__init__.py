"""The policy interface both backends speak, networks, artifacts and shields."""
