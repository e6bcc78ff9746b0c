"""Fixtures of the operator tests; the harness itself is `operator_harness`."""

from operator_harness import k8s, kube, operator, settings, storage

__all__ = ["k8s", "kube", "operator", "settings", "storage"]
