"""API service: sessions, compile, download, delete over HTTP; serves the frontend."""
