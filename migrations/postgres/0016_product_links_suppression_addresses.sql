-- Product links (issue 19): a product page and an image, both optional absolute http(s) URLs,
-- shown in the offer email's product cards.
ALTER TABLE products ADD COLUMN url TEXT;
ALTER TABLE products ADD COLUMN image_url TEXT;

-- Address suppressions (`retentiond suppressions add/import`): customer_id '' and the
-- normalized address, matched to customers by email or phone at selection and dispatch.
CREATE INDEX suppressions_address ON suppressions (address);
