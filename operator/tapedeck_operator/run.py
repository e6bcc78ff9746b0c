"""`tapedeck operator`: kopf, in this process, with the handlers in `handlers`."""

from __future__ import annotations

from collections.abc import Sequence

import kopf

from tapedeck.cluster.kube import default_namespace
from tapedeck.settings import Settings


def run_operator(
    settings: Settings,
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    liveness: str | None = None,
) -> None:
    import tapedeck_operator.handlers  # noqa: F401 -- registers the handlers

    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=clusterwide,
        namespaces=[] if clusterwide else list(namespaces) or [default_namespace(settings)],
        liveness_endpoint=liveness or settings.operator_liveness,
    )
