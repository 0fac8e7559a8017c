"""Strait server: gRPC job orchestration on a PostgreSQL queue."""
