"""The web console: server-rendered pages over the gRPC API, served by the api role on STRAIT_CONSOLE_ADDRESS."""
