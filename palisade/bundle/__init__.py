"""Policy bundles: the YAML format, parsing with positions, validation, canonical form, signing."""
