-- name: ui_flow_names
-- Friendly names of the fetched flows among $1 (a list of Flow SIDs).
SELECT flow_sid, friendly_name FROM studio.flows
WHERE flow_sid = ANY($1::text[]) AND friendly_name IS NOT NULL;

-- name: ui_flow
-- One flow's fetched state (NULL row when never fetched) and whether any execution names it.
SELECT $1::text AS flow_sid, f.friendly_name, f.status, f.revision AS latest_revision,
       f.fetched_at,
       EXISTS (SELECT FROM studio.executions e WHERE e.flow_sid = $1) AS executions_seen
FROM (SELECT 1) one
LEFT JOIN studio.flows f ON f.flow_sid = $1;

-- name: ui_flow_revisions
-- The revisions of flow $1 that executions ran or that were fetched, newest first.
SELECT revision, bool_or(ran) AS ran, bool_or(fetched) AS fetched
FROM (SELECT DISTINCT flow_revision AS revision, true AS ran, false AS fetched
      FROM studio.executions
      WHERE flow_sid = $1 AND flow_revision IS NOT NULL
      UNION ALL
      SELECT revision, false, true FROM studio.flow_revisions WHERE flow_sid = $1) r
GROUP BY revision
ORDER BY revision DESC
LIMIT 500;

-- name: ui_flow_definition
-- The definition of revision $2 of flow $1: its stored revision, else the flow when at $2.
SELECT coalesce(
    (SELECT definition FROM studio.flow_revisions WHERE flow_sid = $1 AND revision = $2),
    (SELECT definition FROM studio.flows WHERE flow_sid = $1 AND revision = $2));

-- name: ui_flow_ended_at_widget
-- The 20 latest executions of flow $1 in [$2, $3), revision $4, whose last step is at widget $5.
SELECT e.execution_sid, e.status, e.ended_reason, e.date_created, e.contact_channel_address,
       last.date_created AS last_step_at
FROM studio.executions e
CROSS JOIN LATERAL (
    SELECT st.transitioned_from, st.transitioned_to, st.date_created FROM studio.steps st
    WHERE st.execution_sid = e.execution_sid AND st.parent_step_sid IS NULL
    ORDER BY st.date_created DESC NULLS LAST, st.step_sid DESC
    LIMIT 1) last
WHERE e.flow_sid = $1 AND e.date_created >= $2 AND e.date_created < $3
  AND ($4::integer IS NULL OR e.flow_revision = $4)
  AND CASE WHEN last.transitioned_to = 'Ended' THEN last.transitioned_from
           ELSE last.transitioned_to END = $5
ORDER BY e.date_created DESC, e.execution_sid DESC
LIMIT 20;
