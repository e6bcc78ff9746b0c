"""Embedded mode: every service on one machine, with a local compile worker and TTL sweeper."""
