-- Probe (informative): rollup upkeep computing contributions but not writing sink.flow_rollup.
CREATE OR REPLACE FUNCTION sink.rollup_apply(
    p_sids text[], p_before sink.rollup_row[], p_flow_sid text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(*) FROM sink.rollup_grains(
        ARRAY(SELECT a FROM sink.rollup_contrib(p_sids) AS a) || p_before);
END $$;
