"""Safety: cost critics, shields and the safety benchmark."""
