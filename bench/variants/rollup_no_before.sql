-- Probe (informative): rollup upkeep without its "before" half (locks + contribution before).
CREATE OR REPLACE FUNCTION sink.rollup_before(p_sids text[]) RETURNS sink.rollup_row[]
LANGUAGE plpgsql AS $$ BEGIN RETURN '{}'; END $$;
