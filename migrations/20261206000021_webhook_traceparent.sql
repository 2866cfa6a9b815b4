-- The W3C trace context of what queued a delivery (when traces are on), sent with it as the
-- `traceparent` header so that the receiver's work joins the same trace.
alter table webhook_delivery add column traceparent text;
