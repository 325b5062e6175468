"""Tools for keditlab's developers: generators of checked-in files (schema, docs)."""
