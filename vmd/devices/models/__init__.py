"""Device models: one module per family; each ``@device_type`` class registers itself on import."""
