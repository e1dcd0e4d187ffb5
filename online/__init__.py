"""recstack."""
