"""gRPC surface: thin servicers, the auth/error interceptor, proto<->model conversion, validation."""
