"""Tapedeck: record from a browser, stream to a server, compile into an MP4."""
