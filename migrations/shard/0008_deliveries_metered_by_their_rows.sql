-- Webhook deliveries are metered by their `delivery` rows (one per delivery an org accepted,
-- idempotent by delivery id, added to `usage_daily` by the insert that records them) instead of
-- a second, `usage_event` row per delivery. The usage readers that go back to the events count
-- delivery rows for `webhook_deliveries` and leave out these rows, which the rollup already
-- holds and the delivery rows repeat.
delete from usage_event where metric = 'webhook_deliveries' and event_id like 'delivery:%';
