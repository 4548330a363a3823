"""The dispatcher: a gRPC job-dispatch service with a durable SQL record and a Redis index."""
