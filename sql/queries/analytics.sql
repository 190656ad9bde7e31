-- name: analytics_transition_stats
-- studio.transition_stats for flow $1, range [$2, $3), revision $4 (all when null).
SELECT * FROM studio.transition_stats($1, $2, $3, $4::integer)
ORDER BY flow_revision NULLS FIRST, transitions DESC, transitioned_from, transitioned_to;

-- name: analytics_widget_stats
-- studio.widget_stats for flow $1, range [$2, $3), revision $4 (all when null).
SELECT * FROM studio.widget_stats($1, $2, $3, $4::integer)
ORDER BY flow_revision NULLS FIRST, entered DESC, widget;

-- name: analytics_subflow_stats
-- studio.subflow_stats for flow $1, range [$2, $3).
SELECT * FROM studio.subflow_stats($1, $2, $3)
ORDER BY subflow_widget, transitions DESC, transitioned_from, transitioned_to;

-- name: analytics_flow_funnel
-- studio.flow_funnel for flow $1 through widgets $2, executions started in [$3, $4).
SELECT * FROM studio.flow_funnel($1, $2::text[], $3, $4) ORDER BY step;

-- name: analytics_flow_outcomes
-- studio.flow_outcomes rows of flow $1 for UTC days in [$2, $3).
SELECT * FROM studio.flow_outcomes WHERE flow_sid = $1 AND day >= $2 AND day < $3
ORDER BY day, flow_revision NULLS FIRST;

-- name: analytics_flows_overview
-- studio.flows_overview: every flow seen, busiest in the last 7 days first.
SELECT * FROM studio.flows_overview ORDER BY executions_7d DESC, flow_sid;

-- name: analytics_rebuild_flow_rollup
-- Recomputes flow $1's rollup rows from sink.steps; returns the rows written.
SELECT sink.rebuild_flow_rollup($1);

-- name: analytics_rebuild_rollup
-- Recomputes the rollup rows of every step dated at or after $1; returns the rows written.
SELECT sink.rebuild_rollup($1);
