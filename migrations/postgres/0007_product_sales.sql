-- Units sold per product over the `best_seller_days` before each scoring day, counted by
-- `score` while it reads the order lines; campaigns rank their product picks from it.
CREATE TABLE product_sales (
    as_of_date  TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    units       BIGINT NOT NULL,
    window_days BIGINT NOT NULL,
    PRIMARY KEY (as_of_date, product_id)
);
