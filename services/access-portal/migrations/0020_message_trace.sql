-- The trace context (W3C traceparent) of the letter a message belongs to: the document.released a patient's
-- download causes continues the letter's trace (shared/tracing.py). Null when tracing is off.
alter table message add column trace_context jsonb;
