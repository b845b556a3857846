"""Data: the prepared-dataset contract (schema), raw-dump sources, preparation, RecWorld, downloads."""
