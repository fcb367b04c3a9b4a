"""The HTTP API: endpoint declarations, request/response schemas, handlers and the OpenAPI document."""
