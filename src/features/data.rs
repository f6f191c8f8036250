//! The brand's history, loaded once from the raw tables into compact per-customer arrays.
//!
//! Everything downstream (features at any cutoff, labels, scoring) slices these arrays by time,
//! so one load serves every cutoff of a training run. Orders are kept whole (BTYD and gap
//! features need the full history); sessions and events only inside the window the features
//! look at. Customers are indexed by first appearance in the orders; only customers with a
//! completed order are loaded (the population never includes anyone else).

use std::collections::HashMap;

use tracing::Instrument as _;

use crate::db::Db;

/// Product id -> (category index, list price).
type Products = HashMap<String, (u16, Option<f64>), ahash::RandomState>;

/// Event types the features use; others (search, wishlist, …) are not loaded.
pub const EV_VIEW: u8 = 0;
pub const EV_CART: u8 = 1;
pub const EV_CHECKOUT: u8 = 2;
/// Category index for "no category" (an order without items, an event without a product).
pub const NO_CAT: u16 = u16::MAX;
pub const DAY: i64 = 86_400;

#[derive(Debug, Default)]
pub struct BrandData {
    pub customer_ids: Vec<String>,
    /// Category names, sorted; index = category id.
    pub categories: Vec<String>,
    /// Orders by customer: `order_start[c]..order_start[c+1]`, sorted by time.
    pub order_start: Vec<u32>,
    pub order_at: Vec<i64>,
    pub order_amount: Vec<f32>,
    pub order_discounted: Vec<bool>,
    /// Per order, its category spend lines: `line_start[o]..line_start[o+1]` into `line_cat`
    /// and `line_spend` (one entry per category).
    pub line_start: Vec<u32>,
    pub line_cat: Vec<u16>,
    pub line_spend: Vec<f32>,
    /// Sessions by customer (start times, sorted), inside the loaded window.
    pub session_start: Vec<u32>,
    pub session_at: Vec<i64>,
    /// Events by customer, sorted by time, deduplicated and without bot bursts.
    pub event_start: Vec<u32>,
    pub event_at: Vec<i64>,
    pub event_kind: Vec<u8>,
    pub event_cat: Vec<u16>,
    /// Window of sessions/events that were loaded: [browse_from, until).
    pub browse_from: i64,
    /// Nothing at or after this instant was loaded.
    pub until: i64,
    /// Units sold per product since `LoadOptions::sales_from` (empty when not asked).
    pub product_units: Vec<(String, i64)>,
    pub stats: LoadStats,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadStats {
    pub orders: u64,
    pub order_lines: u64,
    pub sessions: u64,
    pub events: u64,
    pub duplicate_events: u64,
    pub bot_events: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Load nothing at or after this instant (Unix seconds).
    pub until: i64,
    /// Load sessions and events from this instant on.
    pub browse_from: i64,
    /// A customer-day with more events than this is a bot burst and is dropped.
    pub bot_events_per_day: u32,
    /// Also count units sold per product in orders from this instant on (best sellers for
    /// campaign product picks, computed while the order lines stream past anyway).
    pub sales_from: Option<i64>,
}

impl BrandData {
    pub fn customers(&self) -> usize {
        self.customer_ids.len()
    }

    pub fn orders_of(&self, c: usize) -> std::ops::Range<usize> {
        self.order_start[c] as usize..self.order_start[c + 1] as usize
    }

    /// The customer's orders strictly before `t`.
    pub fn orders_before(&self, c: usize, t: i64) -> std::ops::Range<usize> {
        let r = self.orders_of(c);
        let n = self.order_at[r.clone()].partition_point(|&x| x < t);
        r.start..r.start + n
    }

    pub fn lines_of(&self, o: usize) -> std::ops::Range<usize> {
        self.line_start[o] as usize..self.line_start[o + 1] as usize
    }

    /// The category with the largest spend in order `o` (ties: lowest index).
    pub fn main_category(&self, o: usize) -> u16 {
        let mut best = (NO_CAT, f32::NEG_INFINITY);
        for l in self.lines_of(o) {
            if self.line_spend[l] > best.1
                || (self.line_spend[l] == best.1 && self.line_cat[l] < best.0)
            {
                best = (self.line_cat[l], self.line_spend[l]);
            }
        }
        best.0
    }

    pub fn sessions_of(&self, c: usize) -> &[i64] {
        &self.session_at[self.session_start[c] as usize..self.session_start[c + 1] as usize]
    }

    pub fn events_of(&self, c: usize) -> std::ops::Range<usize> {
        self.event_start[c] as usize..self.event_start[c + 1] as usize
    }

    /// Earliest and latest completed order (None without orders).
    pub fn order_span(&self) -> Option<(i64, i64)> {
        let min = self.order_at.iter().min()?;
        let max = self.order_at.iter().max()?;
        Some((*min, *max))
    }

    /// Loads the history from the database.
    #[tracing::instrument(skip_all, fields(until = opts.until, browse_from = opts.browse_from))]
    pub async fn load(db: &Db, opts: LoadOptions) -> anyhow::Result<BrandData> {
        let started = std::time::Instant::now();
        let categories: Vec<String> = crate::with_pool!(db, p => {
            sqlx::query_scalar::<_, String>("SELECT DISTINCT category FROM products ORDER BY category").fetch_all(p).await
        })?;
        let cat_index: HashMap<&str, u16> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i.min(NO_CAT as usize - 1) as u16))
            .collect();
        // Products are few: map them here rather than joining every line and event to them in
        // SQL (a B-tree lookup per row, 12 M of them at 1 M customers).
        let mut products: Products = HashMap::default();
        crate::scan::scan(
            db,
            "SELECT product_id, category, price FROM products",
            &[],
            |row| {
                if let (Some(id), Some(&c)) =
                    (row.text(0)?, row.text(1)?.and_then(|c| cat_index.get(c)))
                {
                    products.insert(id.to_owned(), (c, row.real(2)?));
                }
                Ok(())
            },
        )
        .await?;

        // Sessions and events are read on a second connection (and core) while the orders and
        // their lines stream in here. The customer index only exists once the orders are read,
        // so that branch keys its rows by a 64-bit hash of the customer id, mapped afterwards.
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let mut browsing = {
            let db = db.clone();
            let product_cats: HashMap<String, u16, ahash::RandomState> =
                products.iter().map(|(p, v)| (p.clone(), v.0)).collect();
            let hasher = hasher.clone();
            AbortOnDrop(tokio::spawn(
                async move { RawBrowsing::load(&db, opts, &product_cats, &hasher).await }
                    .instrument(tracing::Span::current()),
            ))
        };

        let mut b = Builder::default();
        // Two sequential scans instead of a join in order_id order: walking the primary-key
        // index costs one random table lookup per order (minutes at 10 M orders on SQLite).
        // Orders are matched to their lines through a 64-bit hash of the order id.
        let mut matcher = OrderMatcher::default();
        let mut totals: Vec<Option<f64>> = Vec::new();
        // Every order, filtered here: the matcher then sees the orders in the table's own
        // order, which is usually the lines' order too. No WHERE also keeps SQLite off the
        // time index: nearly every order qualifies, and an index walk costs a random table
        // lookup per row (56 s instead of a few at 6 M orders).
        let sql = "SELECT order_id, customer_id, ordered_at, total_amount, discount_amount, status FROM orders";
        crate::scan::scan(db, sql, &[], |row| {
            let h = hasher.hash_one(row.text(0)?.unwrap_or_default());
            let completed = row.text(5)? == Some("completed");
            let Some(at) = row.int(2)?.filter(|&t| completed && t < opts.until) else {
                matcher.push(h, None);
                return Ok(());
            };
            matcher.push(h, Some(totals.len() as u32));
            totals.push(row.real(3)?);
            b.push_order(
                row.text(1)?.unwrap_or_default(),
                at,
                row.real(4)?.is_some_and(|d| d > 0.0),
            );
            Ok(())
        })
        .await?;
        let mut lines: Vec<(u32, u16, f32)> = Vec::new();
        let mut sales: HashMap<String, i64, ahash::RandomState> = HashMap::default();
        let sales_from = opts.sales_from.unwrap_or(i64::MAX);
        let sql = "SELECT order_id, product_id, quantity, unit_price FROM order_items";
        crate::scan::scan(db, sql, &[], |row| {
            let found = matcher.find(hasher.hash_one(row.text(0)?.unwrap_or_default()));
            // Lines of cancelled, refunded or later orders are not loaded.
            let Some(o) = found else { return Ok(()) };
            if b.at[o as usize] >= sales_from
                && let Some(p) = row.text(1)?
            {
                let q = row.int(2)?.unwrap_or(0);
                match sales.get_mut(p) {
                    Some(u) => *u += q,
                    None => {
                        sales.insert(p.to_owned(), q);
                    }
                }
            }
            if let Some(&(c, price)) = row.text(1)?.and_then(|p| products.get(p)) {
                let spend = row.int(2)?.unwrap_or(0) as f64 * row.real(3)?.or(price).unwrap_or(0.0);
                lines.push((o, c, spend as f32));
            }
            Ok(())
        })
        .await?;
        drop(matcher);
        tracing::info!(
            orders = totals.len(),
            lines = lines.len(),
            secs = started.elapsed().as_secs_f32(),
            "orders loaded"
        );
        b.set_lines(lines, &totals);
        let mut data = b.into_orders(categories);
        let mut sales: Vec<(String, i64)> = sales.into_iter().collect();
        sales.sort_unstable();
        data.product_units = sales;
        data.until = opts.until;
        data.browse_from = opts.browse_from;
        let raw = match (&mut browsing.0).await {
            Ok(raw) => raw?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(e.into()),
        };
        if !data.set_raw_browsing(raw, |c| hasher.hash_one(c), opts.bot_events_per_day) {
            // Two customer ids with one hash (about one brand in 10^7 at 1 M customers):
            // read the browsing again, matched by the ids themselves.
            tracing::warn!("customer id hash collision: reading sessions and events again by id");
            data.load_browsing(db, opts, &products).await?;
        }
        tracing::info!(
            customers = data.customers(),
            orders = data.stats.orders,
            events = data.stats.events,
            sessions = data.stats.sessions,
            secs = started.elapsed().as_secs_f32(),
            "history loaded"
        );
        Ok(data)
    }

    /// Browsing matched to customers by id (the fallback of [`Self::set_raw_browsing`]).
    async fn load_browsing(
        &mut self,
        db: &Db,
        opts: LoadOptions,
        products: &Products,
    ) -> anyhow::Result<()> {
        let index: HashMap<&str, u32> = self
            .customer_ids
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as u32))
            .collect();
        let mut sessions: Vec<(u32, i64)> = Vec::new();
        crate::scan::scan(db, SESSIONS_SQL, &[opts.browse_from, opts.until], |row| {
            if let Some(&i) = row.text(0)?.and_then(|c| index.get(c)) {
                sessions.push((i, row.int(1)?.unwrap_or_default()));
            }
            Ok(())
        })
        .await?;
        let mut events: Vec<(u32, i64, u8, u16)> = Vec::new();
        let (from, until) = event_window(&opts);
        crate::scan::scan(db, EVENTS_SQL, &[from, until], |row| {
            let Some(&i) = row.text(0)?.and_then(|c| index.get(c)) else {
                return Ok(());
            };
            let kind = event_kind(row.text(1)?.unwrap_or_default());
            let cat = row
                .text(3)?
                .and_then(|p| products.get(p))
                .map_or(NO_CAT, |p| p.0);
            events.push((i, row.int(2)?.unwrap_or_default(), kind, cat));
            Ok(())
        })
        .await?;
        drop(index);
        self.set_browsing(sessions, events, opts.bot_events_per_day);
        Ok(())
    }

    /// Maps browsing keyed by customer-id hash onto the customer index (rows of customers
    /// without a loaded order are dropped). False, with nothing set, if two loaded customers
    /// share a hash.
    fn set_raw_browsing(
        &mut self,
        raw: RawBrowsing,
        hash: impl Fn(&str) -> u64,
        bot_per_day: u32,
    ) -> bool {
        let mut index: HashMap<u64, u32, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(self.customers(), Default::default());
        for (i, c) in self.customer_ids.iter().enumerate() {
            if index.insert(hash(c.as_str()), i as u32).is_some() {
                return false;
            }
        }
        let sessions = raw
            .sessions
            .into_iter()
            .filter_map(|(h, t)| index.get(&h).map(|&i| (i, t)))
            .collect();
        let events = raw
            .events
            .into_iter()
            .filter_map(|(h, t, k, c)| index.get(&h).map(|&i| (i, t, k, c)))
            .collect();
        self.set_browsing(sessions, events, bot_per_day);
        true
    }

    fn set_browsing(
        &mut self,
        mut sessions: Vec<(u32, i64)>,
        events: Vec<(u32, i64, u8, u16)>,
        bot_per_day: u32,
    ) {
        let n = self.customers();
        sessions.sort_unstable();
        self.stats.sessions = sessions.len() as u64;
        self.session_start = csr_starts(n, sessions.iter().map(|s| s.0));
        self.session_at = sessions.into_iter().map(|s| s.1).collect();
        self.set_events(n, events, bot_per_day);
    }

    /// Sorts, deduplicates (same customer, time, kind and category) and drops bot bursts.
    fn set_events(&mut self, n: usize, mut events: Vec<(u32, i64, u8, u16)>, bot_per_day: u32) {
        events.sort_unstable();
        let before = events.len();
        events.dedup();
        self.stats.duplicate_events = (before - events.len()) as u64;
        // Bot bursts: customer-days over the cap. Events are sorted by (customer, time), so a
        // customer-day is a contiguous run.
        let mut keep = vec![true; events.len()];
        let mut i = 0;
        while i < events.len() {
            let (c, t) = (events[i].0, events[i].1.div_euclid(DAY));
            let mut j = i;
            while j < events.len() && events[j].0 == c && events[j].1.div_euclid(DAY) == t {
                j += 1;
            }
            if (j - i) as u32 > bot_per_day {
                keep[i..j].iter_mut().for_each(|k| *k = false);
                self.stats.bot_events += (j - i) as u64;
            }
            i = j;
        }
        let events: Vec<_> = events
            .into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e))
            .collect();
        self.stats.events = events.len() as u64;
        self.event_start = csr_starts(n, events.iter().map(|e| e.0));
        self.event_at = events.iter().map(|e| e.1).collect();
        self.event_kind = events.iter().map(|e| e.2).collect();
        self.event_cat = events.iter().map(|e| e.3).collect();
    }
}

/// CSR offsets for `n` groups from the (sorted) group id of each element.
fn csr_starts(n: usize, ids: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut starts = vec![0u32; n + 1];
    for id in ids {
        starts[id as usize + 1] += 1;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    starts
}

/// Finds the loaded order of an order line by the hash of its order id. Lines are usually
/// listed in their orders' order (exports, and the heap scans of tables loaded from them), so
/// the current and the next order are tried first; a hash table is built only for the first
/// line found elsewhere. In a 1 M-customer PostgreSQL `score`, the table's 6.4 M random
/// inserts took 5.0% of the CPU samples (2.5% at 100 k) and the line loop around its lookups
/// 10.5%.
#[derive(Default)]
struct OrderMatcher {
    /// Each scanned order's id hash, in scan order, and its loaded index (`NOT_LOADED`).
    orders: Vec<(u64, u32)>,
    /// Where the next line's order is expected.
    next: usize,
    /// Id hash → position in `orders`, once needed.
    index: Option<HashMap<u64, usize, ahash::RandomState>>,
}

const NOT_LOADED: u32 = u32::MAX;

impl OrderMatcher {
    fn push(&mut self, hash: u64, loaded: Option<u32>) {
        self.orders.push((hash, loaded.unwrap_or(NOT_LOADED)));
    }

    /// The loaded index of the order with this id hash (None: not loaded, or unknown).
    fn find(&mut self, hash: u64) -> Option<u32> {
        let at = |i: usize| self.orders.get(i).is_some_and(|o| o.0 == hash);
        let pos = if self.next > 0 && at(self.next - 1) {
            self.next - 1
        } else if at(self.next) {
            self.next
        } else {
            let orders = &self.orders;
            // Built in reverse, so that of two orders with one hash the first is kept, as in
            // the sequence.
            let index = self.index.get_or_insert_with(|| {
                orders
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, o)| (o.0, i))
                    .collect()
            });
            *index.get(&hash)?
        };
        self.next = pos + 1;
        let o = self.orders[pos].1;
        (o != NOT_LOADED).then_some(o)
    }
}

/// A spawned task that is aborted when dropped: an error reading the orders stops the
/// browsing read beside it too.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sessions and events of the browsing window, keyed by a hash of the customer id.
struct RawBrowsing {
    sessions: Vec<(u64, i64)>,
    /// (customer hash, time, kind, category)
    events: Vec<(u64, i64, u8, u16)>,
}

/// Event features look back 30 days, not the 90 of sessions.
fn event_window(opts: &LoadOptions) -> (i64, i64) {
    (
        opts.browse_from + (super::BROWSE_LOOKBACK_DAYS - super::EVENT_LOOKBACK_DAYS) * DAY,
        opts.until,
    )
}

// The time indexes cover the columns read here (migration 0005): a window is one sequential
// walk of the index, never a table lookup per row.
const SESSIONS_SQL: &str =
    "SELECT customer_id, started_at FROM sessions WHERE started_at >= $1 AND started_at < $2";
const EVENTS_SQL: &str = "SELECT customer_id, event_type, occurred_at, product_id FROM events \
    WHERE occurred_at >= $1 AND occurred_at < $2 \
    AND event_type IN ('view', 'add_to_cart', 'checkout_start')";

fn event_kind(t: &str) -> u8 {
    match t {
        "view" => EV_VIEW,
        "add_to_cart" => EV_CART,
        _ => EV_CHECKOUT,
    }
}

impl RawBrowsing {
    async fn load(
        db: &Db,
        opts: LoadOptions,
        product_cats: &HashMap<String, u16, ahash::RandomState>,
        hasher: &ahash::RandomState,
    ) -> anyhow::Result<RawBrowsing> {
        let mut sessions = Vec::new();
        crate::scan::scan(db, SESSIONS_SQL, &[opts.browse_from, opts.until], |row| {
            if let Some(c) = row.text(0)? {
                sessions.push((hasher.hash_one(c), row.int(1)?.unwrap_or_default()));
            }
            Ok(())
        })
        .await?;
        let mut events = Vec::new();
        let (from, until) = event_window(&opts);
        crate::scan::scan(db, EVENTS_SQL, &[from, until], |row| {
            let Some(c) = row.text(0)? else { return Ok(()) };
            let kind = event_kind(row.text(1)?.unwrap_or_default());
            let cat = row
                .text(3)?
                .and_then(|p| product_cats.get(p))
                .copied()
                .unwrap_or(NO_CAT);
            events.push((
                hasher.hash_one(c),
                row.int(2)?.unwrap_or_default(),
                kind,
                cat,
            ));
            Ok(())
        })
        .await?;
        Ok(RawBrowsing { sessions, events })
    }
}

/// Accumulates orders (customer, time, discount) and then their category lines.
#[derive(Default)]
struct Builder {
    index: HashMap<Box<str>, u32, ahash::RandomState>,
    ids: Vec<String>,
    // Per order (unsorted): customer, time, amount, discounted, lines.
    cust: Vec<u32>,
    at: Vec<i64>,
    amount: Vec<f32>,
    discounted: Vec<bool>,
    lines: Vec<(u16, f32)>,
    line_start: Vec<u32>,
}

impl Builder {
    /// One order without its lines (the bulk load adds lines afterwards with `set_lines`).
    fn push_order(&mut self, customer: &str, at: i64, discounted: bool) {
        let next = self.ids.len() as u32;
        // Exports usually list a customer's orders together: the previous order's customer
        // needs no lookup.
        let c = match self.cust.last() {
            Some(&last) if self.ids[last as usize] == customer => last,
            _ => self.lookup(customer, next),
        };
        self.cust.push(c);
        self.at.push(at);
        self.discounted.push(discounted);
    }

    fn lookup(&mut self, customer: &str, next: u32) -> u32 {
        match self.index.get(customer) {
            Some(&c) => c,
            None => {
                self.index.insert(customer.into(), next);
                self.ids.push(customer.to_owned());
                next
            }
        }
    }

    /// Attaches (order, category, spend) lines to the pushed orders, merging lines of one
    /// category, and sets each amount (the order total, else the sum of its lines).
    fn set_lines(&mut self, mut lines: Vec<(u32, u16, f32)>, totals: &[Option<f64>]) {
        lines.sort_unstable_by_key(|l| (l.0, l.1));
        self.lines.clear();
        self.line_start.clear();
        self.amount.clear();
        let mut j = 0;
        for (o, total) in totals.iter().enumerate() {
            self.line_start.push(self.lines.len() as u32);
            let mut sum = 0.0f64;
            while j < lines.len() && lines[j].0 as usize == o {
                let (_, cat, spend) = lines[j];
                sum += spend as f64;
                // Lines are sorted by category within the order: a repeat is the previous line.
                let in_order = self.lines.len() > *self.line_start.last().unwrap() as usize;
                match self.lines.last_mut() {
                    Some(last) if in_order && last.0 == cat => last.1 += spend,
                    _ => self.lines.push((cat, spend)),
                }
                j += 1;
            }
            self.amount.push(total.unwrap_or(sum).max(0.0) as f32);
        }
    }

    fn into_orders(self, categories: Vec<String>) -> BrandData {
        let n = self.ids.len();
        let m = self.cust.len();
        let mut order: Vec<u32> = (0..m as u32).collect();
        order.sort_unstable_by_key(|&o| (self.cust[o as usize], self.at[o as usize], o));
        let mut d = BrandData {
            order_start: csr_starts(n, order.iter().map(|&o| self.cust[o as usize])),
            customer_ids: self.ids,
            categories,
            ..Default::default()
        };
        d.order_at.reserve(m);
        d.line_start.reserve(m + 1);
        d.line_start.push(0);
        for &o in &order {
            let o = o as usize;
            d.order_at.push(self.at[o]);
            d.order_amount.push(self.amount[o]);
            d.order_discounted.push(self.discounted[o]);
            let end = self
                .line_start
                .get(o + 1)
                .map_or(self.lines.len(), |&e| e as usize);
            for &(c, s) in &self.lines[self.line_start[o] as usize..end] {
                d.line_cat.push(c);
                d.line_spend.push(s);
            }
            d.line_start.push(d.line_cat.len() as u32);
        }
        d.stats.orders = m as u64;
        d.stats.order_lines = d.line_cat.len() as u64;
        d
    }
}

#[cfg(test)]
pub mod testing {
    //! Builds `BrandData` in memory for unit tests.
    use super::*;

    /// One order: (customer, time, amount, discounted, [(category, spend)]).
    pub type Order<'a> = (&'a str, i64, f64, bool, &'a [(u16, f64)]);

    pub fn brand(
        categories: &[&str],
        orders: &[Order],
        events: &[(&str, i64, u8, u16)],
    ) -> BrandData {
        let mut b = Builder::default();
        let mut totals = Vec::new();
        let mut all_lines = Vec::new();
        for (i, (c, at, amount, disc, lines)) in orders.iter().enumerate() {
            b.push_order(c, *at, *disc);
            totals.push(Some(*amount));
            all_lines.extend(
                lines
                    .iter()
                    .map(|(cat, spend)| (i as u32, *cat, *spend as f32)),
            );
        }
        b.set_lines(all_lines, &totals);
        let mut d = b.into_orders(categories.iter().map(|s| s.to_string()).collect());
        let n = d.customers();
        let idx: HashMap<String, u32> = d
            .customer_ids
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect();
        let ev = events
            .iter()
            .filter_map(|(c, t, k, cat)| idx.get(*c).map(|&i| (i, *t, *k, *cat)))
            .collect();
        d.set_events(n, ev, 200);
        d.session_start = vec![0; n + 1];
        d.until = i64::MAX;
        d.browse_from = i64::MIN;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::testing::brand;
    use super::*;

    /// Lines in their orders' order are matched without the table; lines elsewhere, of orders
    /// not loaded, or of no known order are matched (or not) exactly as by the table.
    #[test]
    fn order_lines_are_matched_in_sequence_and_out_of_it() {
        let mut m = OrderMatcher::default();
        for (h, o) in [
            (10, Some(0)),
            (11, None),
            (12, Some(1)),
            (13, Some(2)),
            (14, None),
        ] {
            m.push(h, o);
        }
        // In sequence: two lines of order 10, one of the cancelled 11, then 12 and 13.
        let seq: Vec<_> = [10, 10, 11, 12, 13, 13]
            .into_iter()
            .map(|h| m.find(h))
            .collect();
        assert_eq!(seq, [Some(0), Some(0), None, Some(1), Some(2), Some(2)]);
        assert!(
            m.index.is_none(),
            "no table while the lines follow the orders"
        );
        // Out of sequence: back to 10, an unknown order, then 12 and its successor 13.
        let out: Vec<_> = [10, 99, 12, 13, 14, 11]
            .into_iter()
            .map(|h| m.find(h))
            .collect();
        assert_eq!(out, [Some(0), None, Some(1), Some(2), None, None]);
        assert!(m.index.is_some());
    }

    #[test]
    fn orders_are_grouped_by_customer_and_sorted_by_time() {
        let d = brand(
            &["a", "b"],
            &[
                ("x", 30, 10.0, false, &[(0, 4.0), (1, 6.0)]),
                ("y", 5, 1.0, true, &[]),
                ("x", 10, 3.0, false, &[(0, 3.0)]),
            ],
            &[],
        );
        assert_eq!(d.customer_ids, ["x", "y"]);
        assert_eq!(d.order_at, [10, 30, 5]);
        assert_eq!(d.orders_before(0, 30), 0..1);
        assert_eq!(d.main_category(1), 1);
        assert_eq!(d.main_category(2), NO_CAT);
        assert!(d.order_discounted[2]);
    }

    #[test]
    fn browsing_keyed_by_hash_lands_on_the_right_customers_and_collisions_are_refused() {
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let raw = || RawBrowsing {
            sessions: vec![
                (h.hash_one("y"), 50),
                (h.hash_one("nobody"), 60),
                (h.hash_one("x"), 40),
            ],
            events: vec![
                (h.hash_one("x"), 45, EV_CART, 1),
                (h.hash_one("nobody"), 46, EV_VIEW, 0),
                (h.hash_one("y"), 55, EV_VIEW, 0),
            ],
        };
        let mut d = brand(
            &["a", "b"],
            &[
                ("x", 1, 1.0, false, &[]),
                ("x", 3, 1.0, false, &[]),
                ("y", 2, 1.0, false, &[]),
            ],
            &[],
        );
        assert_eq!(
            (d.customer_ids.as_slice(), d.order_start.as_slice()),
            (&["x".to_string(), "y".to_string()][..], &[0, 2, 3][..])
        );
        assert!(d.set_raw_browsing(raw(), |c| h.hash_one(c), 200));
        assert_eq!(
            (d.sessions_of(0), d.sessions_of(1)),
            (&[40][..], &[50][..]),
            "a customer without orders is dropped"
        );
        assert_eq!((d.events_of(0), d.events_of(1)), (0..1, 1..2));
        assert_eq!(
            (d.event_kind[0], d.event_cat[0], d.event_at[1]),
            (EV_CART, 1, 55)
        );
        // Two customers with one hash: refused, so the caller reads by id instead.
        let mut d = brand(
            &["a", "b"],
            &[("x", 1, 1.0, false, &[]), ("y", 2, 1.0, false, &[])],
            &[],
        );
        assert!(!d.set_raw_browsing(raw(), |_| 7, 200));
    }

    #[test]
    fn duplicate_events_and_bot_days_are_dropped() {
        let mut ev = vec![
            ("x", 100, EV_VIEW, 0),
            ("x", 100, EV_VIEW, 0),
            ("x", 200, EV_CART, 1),
        ];
        // 250 views in one day by y: a bot burst.
        for i in 0..250 {
            ev.push(("y", 10 * DAY + i, EV_VIEW, 1));
        }
        ev.push(("y", 12 * DAY, EV_VIEW, 1));
        let d = brand(
            &["a", "b"],
            &[("x", 1, 1.0, false, &[]), ("y", 1, 1.0, false, &[])],
            &ev,
        );
        assert_eq!(d.stats.duplicate_events, 1);
        assert_eq!(d.stats.bot_events, 250);
        assert_eq!(d.events_of(0).len(), 2);
        assert_eq!(d.events_of(1).len(), 1);
    }
}
