"""Webhooks by the Standard Webhooks specification (docs/api.md "Webhooks").

`events` (which transitions are events, pure), `policy` (backoff and delivery state, pure),
`outbox` (storage's durable outbox), `secret` (the `whsec_` secret), `deliverer` (the one
process per deployment that signs and posts).
"""
