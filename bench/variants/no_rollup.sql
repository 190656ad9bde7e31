-- Upper bound of lever 3 (informative, not a fix): the rollup upkeep of 0008 made a no-op.
CREATE OR REPLACE FUNCTION sink.rollup_before(p_sids text[]) RETURNS sink.rollup_row[]
LANGUAGE plpgsql AS $$ BEGIN RETURN '{}'; END $$;
CREATE OR REPLACE FUNCTION sink.rollup_apply(
    p_sids text[], p_before sink.rollup_row[], p_flow_sid text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN END $$;
