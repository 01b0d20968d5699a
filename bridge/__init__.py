"""The bridge: the only writer of points.

MQTT in (`feeds/#`, QoS 1, persistent session, manual acks) -> decode and cast -> one transaction per
batch -> PUBACK after commit -> `rtdp/stored/<feed>` and `rtdp/errors/<feed>/<axis>` out. In `rtdp serve`
with the embedded broker, messages come in through a hook inside the broker instead (bridge.intake: same
writer loop with group commit, acks by resolving the broker's per-message futures after the commit,
notices through the broker's own broadcast).

Decisions (see bridge.service and bridge.writer for the why):
- Delivery is at least once: a message is acknowledged only after its batch committed. A point with
  its own x is idempotent (the (axis, x) upsert); a point without x takes the delivery time, so one
  redelivered after a crash or reconnect may be stored a second time at a later x.
- Retained messages (sent again on every subscribe; amqtt also marks offline-queued ones retained)
  are stored only when every point carries its own x; otherwise rejected (`retained_without_x`).
- Rejections (bad topic, unknown feed, bad payload) are acknowledged, counted by code in Stats,
  logged rate-limited, kept in the Rejection table (about the last 10,000) and published as
  `{"error", "code", ..., "topic", "payload"}`. A topic whose axis (or feed) is not a valid name
  reports on `rtdp/errors/<feed>/~` (or `rtdp/errors/~/~`): '~' is never a name, so only admins
  (subscribed to `rtdp/errors/#`) see errors that belong to no feed.
- Database unavailable (SQLite locked, PostgreSQL gone): nothing is acknowledged; the same batch is
  retried with back-off (0.1 s doubling to 5 s) until it commits; the broker holds the rest.
"""
