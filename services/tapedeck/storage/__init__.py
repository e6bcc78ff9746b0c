"""Storage service: owns session files on the persistent volume, speaks gRPC."""
