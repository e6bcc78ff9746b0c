"""Ingest service: WebSocket media in, gRPC Write streams out."""
