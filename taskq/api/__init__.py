"""The HTTP layer (Quart-Trio): routes, request/response schemas, error mapping."""
