"""Admin API endpoints, one module per resource."""
