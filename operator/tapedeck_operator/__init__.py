"""The Tapedeck operator (SPEC §9): `RecordingSession` resources → compile Jobs, status, TTL.

`handlers` holds the kopf handlers and is what `kopf run -m tapedeck_operator.handlers` (or
`tapedeck operator`) loads. The decisions are pure functions beside it, tested without a
cluster: `jobs` builds the compile Job, `status` turns storage's session and a Job into the
resource's status; the rules they share with embedded mode are in `tapedeck.lifecycle`.
"""
