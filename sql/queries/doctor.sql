-- name: connect_clock
-- The database's clock: a wait for a sink test event counts what arrives from this instant on.
SELECT now()

-- name: connect_test_event
-- Account $1's first sink test event received at or after $2 with a test_id not seen before $2.
SELECT e.data->>'test_id' AS test_id, e.received_at
  FROM sink.events e
 WHERE e.type = 'com.twilio.eventstreams.test-event'
   AND e.received_at >= $2
   AND coalesce(e.data->>'account_sid', substring(e.event_id from '^AC[0-9a-fA-F]{32}')) = $1
   AND NOT EXISTS (
       SELECT 1
         FROM sink.events o
        WHERE o.type = 'com.twilio.eventstreams.test-event'
          AND o.received_at < $2
          AND o.data->>'test_id' = e.data->>'test_id')
 ORDER BY e.received_at
 LIMIT 1

-- name: doctor_last_arrivals
-- When account $1's latest event and latest sink test event arrived, within the last $2 days.
SELECT (SELECT e.received_at
          FROM sink.events e
         WHERE e.received_at > now() - make_interval(days => $2)
           AND coalesce(e.data->>'account_sid',
                        CASE WHEN e.type = 'com.twilio.eventstreams.test-event'
                             THEN substring(e.event_id from '^AC[0-9a-fA-F]{32}') END) = $1
         ORDER BY e.received_at DESC
         LIMIT 1) AS last_delivery,
       (SELECT e.received_at
          FROM sink.events e
         WHERE e.type = 'com.twilio.eventstreams.test-event'
           AND e.received_at > now() - make_interval(days => $2)
           AND coalesce(e.data->>'account_sid', substring(e.event_id from '^AC[0-9a-fA-F]{32}')) = $1
         ORDER BY e.received_at DESC
         LIMIT 1) AS last_test_event
