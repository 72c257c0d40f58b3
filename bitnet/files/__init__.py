"""File helpers: atomic writes (`atomic`) and the project's cache folder (`cache`)."""
