-- A campaign that fails at run time (e.g. a fixed offer category the products table does not
-- have) is skipped while the others run: its `campaign_runs` row records why, for `status`,
-- `/metrics` and the report. NULL when the campaign ran.
ALTER TABLE campaign_runs ADD COLUMN error TEXT;
