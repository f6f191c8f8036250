-- Customer attributes: the extra columns of customers.csv (loyalty tier, skin type, ...) as one
-- JSON object of strings per customer, for campaign audience filters. NULL when none.
ALTER TABLE customers ADD COLUMN attributes TEXT;
