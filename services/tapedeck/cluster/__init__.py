"""Cluster mode: the RecordingSession resource contract, a small Kubernetes client, and the
api's hooks that create, patch and delete those resources (SPEC §2, §9)."""
