"""recstack.offline: jobs — ingest, samples, training, evaluation, index builds, exports."""
