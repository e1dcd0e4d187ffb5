"""recstack.features: data contracts, feature definitions, settings, the event bus and the state store."""
