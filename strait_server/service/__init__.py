"""The service layer: what the API's calls do, between the servicers (which parse requests and convert
results) and the stores (which hold the SQL). Nothing here knows about gRPC messages."""
