//! Synthetic data generator: a realistic, deterministic history for a D2C Ayurveda wellness brand.
//!
//! Writes `customers.csv`, `products.csv`, `orders.csv`, `order_items.csv`, `sessions.csv`,
//! `events.csv` (the import contract) plus `ground_truth.csv` (the hidden truth used by tests to
//! check that models recover what was planted).
//!
//! Determinism: every customer draws from two ChaCha8 streams keyed by `seed` and selected by the
//! customer index (`2*i` for the history, `2*i+1` for the simulated future), so the output depends
//! only on (seed, end, years, customers) and not on threading or chunking. Customers are rendered
//! in chunks by worker threads into in-memory buffers which the calling thread appends to the
//! files in chunk order; at most a few chunks are in flight, so memory stays small.
//!
//! The planted structure (each mechanism is documented where it is implemented):
//! 1. BG/NBD-like heterogeneity: purchase rate λ ~ Gamma(r, α), dropout p ~ Beta(a, b) after
//!    every purchase (`LAMBDA_SHAPE`, `DROPOUT_A`, `Ctx::next_order_time`).
//! 2. Replenishment cycles per category: Gamma(shape 3) gaps whose mean blends 1/λ and the
//!    cycle of the last order's main category (`CYCLE_DAYS`).
//! 3. Category affinities and transitions (`CROSS_SELL`, `Ctx::next_category`).
//! 4. Browsing precedes buying, including a leak of the *future* next order into the last days
//!    before `end` (`Ctx::order_sessions`, `Ctx::customer`).
//! 5. Festival seasonality via a warped purchase clock (`festival_boost`, `Ctx::warp`).
//! 6. Discount sensitivity (`Ctx::order_terms`, the `k = 0.5 + s` factor of the clock).
//! 7. Noise: duplicate events, bots, missing contact data, consent flags, foreign customers.
//! 8. No orders after dropout or at/after `end` (the history loop stops at both).
//!
//! `ground_truth.csv` columns: `lambda_per_day`, `p_dropout` and `discount_sensitivity` are the
//! latent traits (bots: 0 and 1); `alive_at_end` is false once the customer dropped out (at
//! `dropout_at`, the time of the last order) and for bots; `favorite_category` is the argmax
//! of the personal preference; `orders` counts rows in `orders.csv` (any status);
//! `true_p_return_90d` is the probability, given the latent state at `end`, of a *completed*
//! order in [end, end+90d) (0 when not alive); `next_order_at`/`next_category` are the first
//! *completed* order of the simulated future within 365 days (empty if none) and the category
//! with the largest spend in it.
//!
//! `customers.csv` also carries two attribute columns outside the contract, `loyalty_tier`
//! (from the customer's completed spend) and `acquisition_channel` (a hash of the customer
//! number); neither draws random numbers, so they leave everything else unchanged.
//!
//! Volumes (seed-independent to ~1%): per customer ≈ 4.5 orders (median 2–3, a third buy once),
//! 8.6 order lines, 11 sessions and 48 events; ≈ 4.6 KB of CSV.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use chrono::{Datelike, Days, Months, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Gamma};

/// The product categories (names contain no commas; `'` and `&` are fine in CSV).
pub const CATEGORIES: &[&str] = &[
    "hair care",
    "skin care",
    "digestive care",
    "immunity",
    "pain relief",
    "women's wellness",
    "oils",
    "teas",
    "sleep & stress",
    "men's wellness",
];
const NCAT: usize = 10;

/// Replenishment cycle (days) of each category: a bottle of hair oil lasts ~2 months, a pack
/// of tea ~1 month. Mechanism 2: the next gap's mean is the geometric blend
/// `sqrt(cycle[last main category] * 1/λ)`, so timing is partly predictable from the last basket.
const CYCLE_DAYS: [f64; NCAT] = [60.0, 50.0, 30.0, 90.0, 40.0, 30.0, 45.0, 30.0, 45.0, 60.0];
/// Base popularity of categories (acquisition mix, background browsing, transition fallback).
const CAT_POP: [f64; NCAT] = [0.16, 0.12, 0.14, 0.10, 0.08, 0.09, 0.10, 0.09, 0.06, 0.06];
/// Mechanism 3: strong cross-sell pairs. hair care → oils, skin care → women's wellness,
/// digestive care → teas, immunity → teas, pain relief → oils. A row with a target sends
/// [`CROSS_SELL_WEIGHT`] of the transition mass there; the rest follows [`CAT_POP`].
const CROSS_SELL: [Option<usize>; NCAT] = [
    Some(6),
    Some(5),
    Some(7),
    Some(7),
    Some(6),
    None,
    None,
    None,
    None,
    None,
];
const CROSS_SELL_WEIGHT: f64 = 0.7;
/// Next main category: repeat the last one with this probability ...
const P_REPEAT_CATEGORY: f64 = 0.5;
/// ... else follow the transition matrix with this probability, else the personal preference.
const P_TRANSITION: f64 = 0.25;
/// Concentration of the personal Dirichlet preference (times `CAT_POP * NCAT`): well below 1,
/// so most customers have one clearly favourite category.
const PREF_CONCENTRATION: f64 = 0.6;

/// Mechanism 1: λ ~ Gamma(shape r, rate α) orders per day (mean r/α ≈ one order per 50 days).
const LAMBDA_SHAPE: f64 = 0.9;
const LAMBDA_RATE: f64 = 35.0;
/// Mechanism 1: dropout probability after each purchase, p ~ Beta(a, b).
const DROPOUT_A: f64 = 0.8;
const DROPOUT_B: f64 = 6.0;
/// Inter-purchase gaps are Gamma(3, mean/3): more regular than exponential.
const GAP_SHAPE: f64 = 3.0;
const MIN_GAP_MEAN_DAYS: f64 = 4.0;
const MAX_GAP_MEAN_DAYS: f64 = 720.0;
/// Acquisition density over the history rises linearly by this factor (recent ones more often).
const ACQ_GROWTH: f64 = 0.8;

const P_COMPLETED: f64 = 0.95;
const P_CANCELLED: f64 = 0.03; // the rest (2%) is refunded
const BOT_SHARE: f64 = 0.002;
const DUP_EVENT_SHARE: f64 = 0.01;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// How far the future is simulated for `next_order_at`.
const FUTURE_DAYS: i64 = 365;
/// Window of `true_p_return_90d`.
const RETURN_WINDOW_DAYS: i64 = 90;
/// Customers per work unit. Small enough that the in-flight buffers stay a few tens of MB.
const CHUNK: u64 = 2_000;
const THREADS: usize = 2;
/// Hard caps that keep the fixed-width per-customer id sequences unique.
const MAX_ORDERS: usize = 9_999;
const MAX_SESSIONS: usize = 99_999;
const MAX_EVENTS: usize = 999_999;

const NO_PRODUCT: u16 = u16::MAX;

const SOURCES: [&str; 6] = [
    "organic",
    "paid_search",
    "social",
    "email",
    "whatsapp",
    "direct",
];
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const EVENT_TYPES: [&str; 6] = [
    "view",
    "add_to_cart",
    "remove_from_cart",
    "wishlist",
    "search",
    "checkout_start",
];
const EV_VIEW: u8 = 0;
const EV_ATC: u8 = 1;
const EV_REMOVE: u8 = 2;
const EV_WISHLIST: u8 = 3;
const EV_SEARCH: u8 = 4;
const EV_CHECKOUT: u8 = 5;
const STATUSES: [&str; 3] = ["completed", "cancelled", "refunded"];
const ST_COMPLETED: u8 = 0;

/// `customers.csv` attribute columns (outside the contract; `import` keeps them as JSON).
/// Neither draws from the random streams, so the rest of the data is unchanged by them.
/// `loyalty_tier` follows the completed spend of the history: silver from ₹7,500, gold from
/// ₹20,000 (about half bronze and a sixth gold).
const LOYALTY_TIERS: [&str; 3] = ["bronze", "silver", "gold"];
const LOYALTY_SILVER_PAISE: u64 = 7_500 * 100;
const LOYALTY_GOLD_PAISE: u64 = 20_000 * 100;
/// `acquisition_channel` is a hash of the customer number, with these weights (in %).
const ACQUISITION_CHANNELS: [(&str, u64); 5] = [
    ("instagram", 30),
    ("google", 30),
    ("referral", 15),
    ("marketplace", 15),
    ("direct", 10),
];

/// Base product names (with pack size) per category, most popular first.
const PRODUCT_NAMES: [[&str; 15]; NCAT] = [
    [
        "Bhringraj Hair Oil 200ml",
        "Amla Shikakai Shampoo 200ml",
        "Onion Bhringraj Hair Serum 50ml",
        "Neem Anti-Dandruff Shampoo 200ml",
        "Hibiscus Hair Mask 200g",
        "Brahmi Hair Tonic 100ml",
        "Reetha Hair Cleanser 200ml",
        "Methi Hair Conditioner 200ml",
        "Kalonji Hair Growth Oil 100ml",
        "Aloe Vera Scalp Gel 100g",
        "Curry Leaf Hair Tonic 100ml",
        "Jatamansi Hair Pack 100g",
        "Bhringraj Hair Capsules 60 caps",
        "Amla Hair Gummies 30 pcs",
        "Rosemary Hair Spray 100ml",
    ],
    [
        "Kumkumadi Face Serum 30ml",
        "Ubtan Face Wash 100ml",
        "Neem Tulsi Face Pack 100g",
        "Saffron Night Cream 50g",
        "Aloe Vera Gel 150ml",
        "Sandalwood Face Mist 100ml",
        "Manjistha Glow Cream 50g",
        "Turmeric Face Scrub 100g",
        "Rose Water Toner 200ml",
        "Nalpamaradi Body Oil 100ml",
        "Vetiver Body Lotion 200ml",
        "Kesar Lip Balm 10g",
        "Haldi Chandan Soap 125g",
        "Licorice Brightening Serum 30ml",
        "Cucumber Under Eye Gel 15ml",
    ],
    [
        "Triphala Churna 100g",
        "Triphala Tablets 60 tabs",
        "Hingvastak Churna 100g",
        "Isabgol Husk 200g",
        "Ajwain Digestive Drops 30ml",
        "Avipattikar Churna 100g",
        "Jeera Digestive Tablets 60 tabs",
        "Amla Juice 1L",
        "Aloe Vera Juice 1L",
        "Kutki Liver Tonic 200ml",
        "Pudina Hara Pearls 30 caps",
        "Chitrakadi Vati 60 tabs",
        "Gut Balance Powder 150g",
        "Saunf Mukhwas 200g",
        "Trikatu Capsules 60 caps",
    ],
    [
        "Chyawanprash 500g",
        "Chyawanprash Sugar Free 500g",
        "Giloy Tablets 60 tabs",
        "Ashwagandha Capsules 60 caps",
        "Tulsi Drops 30ml",
        "Kadha Mix 100g",
        "Amla Vitamin C Gummies 30 pcs",
        "Moringa Capsules 60 caps",
        "Haldi Doodh Mix 200g",
        "Shilajit Resin 20g",
        "Immunity Booster Syrup 200ml",
        "Guduchi Ghanvati 60 tabs",
        "Mulethi Powder 100g",
        "Sitopaladi Churna 100g",
        "Kesar Immunity Drink 250g",
    ],
    [
        "Mahanarayan Oil 100ml",
        "Pain Relief Balm 25g",
        "Joint Care Capsules 60 caps",
        "Shallaki Tablets 60 tabs",
        "Dashmool Oil 100ml",
        "Nirgundi Oil 100ml",
        "Yograj Guggulu 60 tabs",
        "Muscle Rub Gel 50g",
        "Back Pain Roll-On 50ml",
        "Ortho Relief Spray 100ml",
        "Turmeric Boswellia Capsules 60 caps",
        "Heat Patch Pack of 5",
        "Knee Care Oil 200ml",
        "Maharasnadi Kwath 200ml",
        "Rheumat Relief Tablets 60 tabs",
    ],
    [
        "Shatavari Capsules 60 caps",
        "Ashokarishta 450ml",
        "Lodhra Tablets 60 tabs",
        "PCOS Balance Tea 100g",
        "Period Pain Roll-On 10ml",
        "Iron Plus Gummies 30 pcs",
        "Pregnancy Care Oil 100ml",
        "Women's Multivitamin 60 tabs",
        "Shatavari Granules 200g",
        "Hormone Balance Capsules 60 caps",
        "Intimate Wash 100ml",
        "Dashmularishta 450ml",
        "Calcium Plus Tablets 60 tabs",
        "Menopause Support Capsules 60 caps",
        "Lactation Support Powder 200g",
    ],
    [
        "Brahmi Oil 200ml",
        "Cold Pressed Coconut Oil 500ml",
        "Kumkumadi Tailam 12ml",
        "Til Sesame Massage Oil 200ml",
        "Anu Taila Nasal Drops 10ml",
        "Baby Massage Oil 200ml",
        "Almond Oil 100ml",
        "Eucalyptus Oil 15ml",
        "Neem Oil 100ml",
        "Castor Oil 200ml",
        "Ksheerabala Oil 100ml",
        "Mustard Massage Oil 500ml",
        "Lavender Essential Oil 15ml",
        "Chandanadi Oil 100ml",
        "Neelibhringadi Oil 200ml",
    ],
    [
        "Tulsi Green Tea 25 bags",
        "Masala Chai 250g",
        "Ashwagandha Sleep Tea 25 bags",
        "Ginger Lemon Tea 25 bags",
        "Kahwa Tea 100g",
        "Detox Tea 25 bags",
        "Digestive Herbal Tea 25 bags",
        "Chamomile Tea 25 bags",
        "Moringa Tea 25 bags",
        "Hibiscus Tea 100g",
        "Turmeric Latte Mix 100g",
        "Immunity Kadha Tea 25 bags",
        "Mint Tea 25 bags",
        "Lemongrass Tea 100g",
        "Cinnamon Spice Tea 25 bags",
    ],
    [
        "Ashwagandha Gummies 30 pcs",
        "Brahmi Capsules 60 caps",
        "Jatamansi Sleep Drops 30ml",
        "Deep Sleep Pillow Mist 100ml",
        "Stress Relief Roll-On 10ml",
        "Tagar Tablets 60 tabs",
        "Shankhpushpi Syrup 200ml",
        "Sleep Well Capsules 60 caps",
        "Calm Mind Tea 25 bags",
        "Foot Massage Oil 100ml",
        "Lavender Bath Salt 200g",
        "Mind Balance Tablets 60 tabs",
        "Saraswatarishta 450ml",
        "Meditation Roll-On 10ml",
        "Magnesium Sleep Powder 150g",
    ],
    [
        "Shilajit Gold Capsules 30 caps",
        "Ashwagandha KSM-66 60 caps",
        "Safed Musli Capsules 60 caps",
        "Kaunch Beej Powder 100g",
        "Men's Multivitamin 60 tabs",
        "Beard Growth Oil 30ml",
        "Gokshura Tablets 60 tabs",
        "Stamina Booster Churna 100g",
        "Testo Boost Capsules 60 caps",
        "Charcoal Face Wash 100ml",
        "Protein Plus Powder 500g",
        "Vigour Oil 50ml",
        "Men's Energy Gummies 30 pcs",
        "Hair Fall Control Shampoo for Men 200ml",
        "Musli Power Syrup 200ml",
    ],
];

const INDIAN_NAMES: &[&str] = &[
    "Aarav",
    "Aditi",
    "Aditya",
    "Akash",
    "Amit",
    "Ananya",
    "Anjali",
    "Arjun",
    "Aryan",
    "Deepa",
    "Deepak",
    "Divya",
    "Gaurav",
    "Isha",
    "Ishaan",
    "Kavya",
    "Karan",
    "Kiran",
    "Lakshmi",
    "Manish",
    "Meera",
    "Neha",
    "Nikhil",
    "Pooja",
    "Pranav",
    "Priya",
    "Rahul",
    "Rajesh",
    "Ravi",
    "Rhea",
    "Riya",
    "Rohan",
    "Sai",
    "Sanjay",
    "Sara",
    "Shreya",
    "Siddharth",
    "Sneha",
    "Sunita",
    "Suresh",
    "Tanvi",
    "Varun",
    "Vikram",
    "Vivek",
    "Yash",
    "Zara",
    "Anil",
    "Bhavna",
    "Harish",
    "Jyoti",
    "Kunal",
    "Lata",
    "Mohan",
    "Nisha",
    "Om",
    "Preeti",
    "Ramesh",
    "Sakshi",
    "Tarun",
    "Uma",
    "Vandana",
    "Farhan",
    "Ayesha",
    "Imran",
    "Gurpreet",
    "Harpreet",
    "Simran",
    "Arun",
    "Kavita",
    "Swati",
];
const INTL_NAMES: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Emma",
    "Olivia",
    "Liam",
    "Noah",
    "Sophia",
    "Ava",
    "Mia",
    "Lucas",
    "Ethan",
    "Chloe",
    "Grace",
    "Jack",
    "Amelia",
    "Oliver",
    "Charlotte",
    "Daniel",
    "Sarah",
    "David",
    "Emily",
    "Michael",
    "Hannah",
    "Thomas",
    "Lily",
    "Omar",
    "Fatima",
    "Ahmed",
    "Layla",
    "Wei",
    "Mei",
    "Jun",
    "Li",
    "Chen",
    "Lucy",
    "Ruby",
    "Isla",
    "Harry",
    "George",
];

struct Country {
    code: &'static str,
    tz: &'static str,
    /// Cumulative share.
    cum: f64,
}
/// Mechanism 7: ~85% of customers are in India, the rest spread over the diaspora markets.
const COUNTRIES: [Country; 6] = [
    Country {
        code: "IN",
        tz: "Asia/Kolkata",
        cum: 0.85,
    },
    Country {
        code: "US",
        tz: "America/New_York",
        cum: 0.90,
    },
    Country {
        code: "GB",
        tz: "Europe/London",
        cum: 0.94,
    },
    Country {
        code: "AE",
        tz: "Asia/Dubai",
        cum: 0.97,
    },
    Country {
        code: "SG",
        tz: "Asia/Singapore",
        cum: 0.985,
    },
    Country {
        code: "AU",
        tz: "Australia/Sydney",
        cum: 1.0,
    },
];

/// Inputs of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Number of customers to simulate.
    pub customers: u64,
    /// Seed of every random stream; same (seed, end, years, customers) → byte-identical files.
    pub seed: u64,
    /// The history ends (exclusively) at this date, 00:00 UTC.
    pub end: NaiveDate,
    /// History length in years (default 3).
    pub years: u32,
    /// Reserved for a future treatment effect of messages; stored, not used yet.
    pub message_effect: f64,
}

impl GenerateParams {
    /// Three years of history ending (exclusively) at `end`, no message effect.
    pub fn new(customers: u64, seed: u64, end: NaiveDate) -> Self {
        Self {
            customers,
            seed,
            end,
            years: 3,
            message_effect: 0.0,
        }
    }
}

/// Rows written per file (header rows excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Rows of `customers.csv` (and of `ground_truth.csv`).
    pub customers: u64,
    /// Rows of `products.csv`.
    pub products: u64,
    /// Rows of `orders.csv`.
    pub orders: u64,
    /// Rows of `order_items.csv`.
    pub order_items: u64,
    /// Rows of `sessions.csv`.
    pub sessions: u64,
    /// Rows of `events.csv` (duplicates included).
    pub events: u64,
}

const H_CUSTOMERS: &str = "customer_id,email,phone,first_name,country,timezone,email_opt_in,sms_opt_in,whatsapp_opt_in,created_at,loyalty_tier,acquisition_channel\n";
const H_PRODUCTS: &str = "product_id,category,name,price,in_stock\n";
const H_ORDERS: &str =
    "order_id,customer_id,ordered_at,total_amount,currency,status,discount_amount\n";
const H_ITEMS: &str = "order_id,product_id,quantity,unit_price\n";
const H_SESSIONS: &str = "session_id,customer_id,started_at,source,device\n";
const H_EVENTS: &str = "event_id,customer_id,event_type,occurred_at,product_id,session_id\n";
const H_TRUTH: &str = "customer_id,lambda_per_day,p_dropout,alive_at_end,dropout_at,favorite_category,discount_sensitivity,is_bot,orders,true_p_return_90d,next_order_at,next_category\n";

/// Generates the data set into `out_dir` (created if missing). `progress` is called from the
/// calling thread with the number of customers written so far.
pub fn generate(
    params: &GenerateParams,
    out_dir: &Path,
    progress: &dyn Fn(u64),
) -> Result<GenerateSummary> {
    let ctx = Ctx::new(params)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;
    let open = |name: &str, header: &str| -> Result<File> {
        let path = out_dir.join(name);
        let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(header.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(f)
    };

    let mut summary = GenerateSummary::default();
    {
        let mut f = open("products.csv", H_PRODUCTS)?;
        let mut buf = Vec::new();
        for (i, p) in ctx.products.iter().enumerate() {
            push_product_id(&mut buf, i as u16);
            buf.push(b',');
            push_text(&mut buf, CATEGORIES[p.cat as usize]);
            buf.push(b',');
            push_text(&mut buf, p.name);
            buf.push(b',');
            push_money(&mut buf, p.price);
            buf.push(b',');
            push_bool(&mut buf, p.in_stock);
            buf.push(b'\n');
        }
        f.write_all(&buf).context("writing products.csv")?;
        summary.products = ctx.products.len() as u64;
    }

    let mut files = [
        open("customers.csv", H_CUSTOMERS)?,
        open("orders.csv", H_ORDERS)?,
        open("order_items.csv", H_ITEMS)?,
        open("sessions.csv", H_SESSIONS)?,
        open("events.csv", H_EVENTS)?,
        open("ground_truth.csv", H_TRUTH)?,
    ];
    const NAMES: [&str; 6] = [
        "customers.csv",
        "orders.csv",
        "order_items.csv",
        "sessions.csv",
        "events.csv",
        "ground_truth.csv",
    ];

    let n_chunks = params.customers.div_ceil(CHUNK) as usize;
    let threads = THREADS.min(n_chunks.max(1));
    let ctx_ref = &ctx;
    std::thread::scope(|scope| -> Result<()> {
        let mut receivers = Vec::with_capacity(threads);
        for w in 0..threads {
            // Bounded per-worker channels: chunk k always comes from worker k % threads, so the
            // writer consumes strictly in order and at most ~2 chunks per worker are in flight.
            let (tx, rx) = mpsc::sync_channel::<Chunk>(2);
            receivers.push(rx);
            scope.spawn(move || {
                let mut scratch = Scratch::default();
                let mut k = w;
                while k < n_chunks {
                    let chunk = ctx_ref.render_chunk(k as u64, &mut scratch);
                    if tx.send(chunk).is_err() {
                        break; // the writer gave up
                    }
                    k += threads;
                }
            });
        }
        let result = (|| -> Result<()> {
            for k in 0..n_chunks {
                let chunk = receivers[k % threads]
                    .recv()
                    .context("a generator thread stopped unexpectedly")?;
                let bufs = [
                    &chunk.customers,
                    &chunk.orders,
                    &chunk.items,
                    &chunk.sessions,
                    &chunk.events,
                    &chunk.truth,
                ];
                for ((f, b), name) in files.iter_mut().zip(bufs).zip(NAMES) {
                    f.write_all(b).with_context(|| format!("writing {name}"))?;
                }
                summary.customers += chunk.n_customers;
                summary.orders += chunk.n_orders;
                summary.order_items += chunk.n_items;
                summary.sessions += chunk.n_sessions;
                summary.events += chunk.n_events;
                progress(summary.customers);
            }
            Ok(())
        })();
        drop(receivers); // unblocks workers if we stopped early
        result
    })?;
    for (f, name) in files.iter_mut().zip(NAMES) {
        f.flush().with_context(|| format!("flushing {name}"))?;
    }
    Ok(summary)
}

// ------------------------------------------------------------------------------------------
// Simulation context
// ------------------------------------------------------------------------------------------

struct Product {
    cat: u8,
    name: &'static str,
    /// Price in paise.
    price: u64,
    in_stock: bool,
}

struct Ctx {
    key: [u8; 32],
    n: u64,
    /// Digits of the zero-padded customer number (at least 7).
    width: usize,
    start: i64,
    end: i64,
    /// Festival boost per day from `start` (covers the history, the future and some slack).
    boost: Vec<f64>,
    /// `bcum[d]` = sum of `boost[..d]`; one longer than `boost`.
    bcum: Vec<f64>,
    /// "YYYY-MM-DDT" for each day from `start`, same length as `boost`.
    date_prefix: Vec<[u8; 11]>,
    products: Vec<Product>,
    cat_products: Vec<Vec<u16>>,
    cat_product_cum: Vec<Vec<f64>>,
    trans: [[f64; NCAT]; NCAT],
    trans_cum: [[f64; NCAT]; NCAT],
    pop_cum: [f64; NCAT],
    lambda_dist: Gamma<f64>,
    dropout_dist: Beta<f64>,
    sensitivity_dist: Beta<f64>,
    pref_dists: Vec<Gamma<f64>>,
}

/// Mechanism 5: festival and sale seasons raise the purchase intensity. The boost `b(day)` enters
/// the purchase clock as an intensity multiplier `1 + b * (0.5 + s)`: ×1.5–2.2 in the Diwali
/// season (15 Oct – 14 Nov; ~×1.4 more orders per day observed, as renewal gaps straddle the
/// season), a smaller New Year bump and an Independence Day sale; discount-sensitive customers
/// (s → 1) speed up the most.
fn festival_boost(d: NaiveDate) -> f64 {
    match (d.month(), d.day()) {
        (10, 15..) | (11, ..=14) => 0.9,
        (12, 24..) | (1, ..=3) => 0.4,
        (8, 12..=16) => 0.3,
        _ => 0.0,
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The loyalty tier earned by the completed orders of the history.
fn loyalty_tier(orders: &[OrderRec]) -> &'static str {
    let spend: u64 = orders
        .iter()
        .filter(|o| o.status == ST_COMPLETED)
        .map(|o| o.subtotal - o.discount)
        .sum();
    LOYALTY_TIERS
        [usize::from(spend >= LOYALTY_SILVER_PAISE) + usize::from(spend >= LOYALTY_GOLD_PAISE)]
}

/// The acquisition channel of customer `idx`: a hash of the number, not a random draw.
fn acquisition_channel(idx: u64) -> &'static str {
    let mut x = idx ^ 0x4143_5155_4953_4954; // "ACQUISIT"
    let mut u = splitmix64(&mut x) % 100;
    for (name, weight) in ACQUISITION_CHANNELS {
        if u < weight {
            return name;
        }
        u -= weight;
    }
    unreachable!("the weights sum to 100")
}

fn cumulate<const N: usize>(w: &[f64; N]) -> [f64; N] {
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    let mut out = [0.0; N];
    for (o, x) in out.iter_mut().zip(w) {
        acc += x / total;
        *o = acc;
    }
    out[N - 1] = 1.0;
    out
}

fn sample_cum(cum: &[f64], u: f64) -> usize {
    cum.iter().position(|&c| u < c).unwrap_or(cum.len() - 1)
}

/// Uniform in (0, 1].
fn unit_open0(rng: &mut ChaCha8Rng) -> f64 {
    1.0 - rng.random::<f64>()
}

/// Survival function of Gamma(3, θ) at x (in units of θ: y = x/θ).
fn gamma3_sf(y: f64) -> f64 {
    if y <= 0.0 {
        return 1.0;
    }
    (-y).exp() * (1.0 + y + 0.5 * y * y)
}

#[derive(Clone, Copy)]
struct Items {
    n: u8,
    v: [(u16, u8); 4],
}

impl Items {
    fn as_slice(&self) -> &[(u16, u8)] {
        &self.v[..self.n as usize]
    }
    fn contains(&self, p: u16) -> bool {
        self.as_slice().iter().any(|&(q, _)| q == p)
    }
}

struct OrderRec {
    t: i64,
    items: Items,
    status: u8,
    subtotal: u64,
    discount: u64,
}

#[derive(Clone, Copy)]
struct Sess {
    start: i64,
    source: u8,
    device: u8,
    ev0: u32,
    ev1: u32,
}

#[derive(Clone, Copy)]
struct Ev {
    t: i64,
    product: u16,
    typ: u8,
}

#[derive(Default)]
struct Scratch {
    orders: Vec<OrderRec>,
    sess: Vec<Sess>,
    evs: Vec<Ev>,
    order: Vec<u32>,
}

#[derive(Default)]
struct Chunk {
    customers: Vec<u8>,
    orders: Vec<u8>,
    items: Vec<u8>,
    sessions: Vec<u8>,
    events: Vec<u8>,
    truth: Vec<u8>,
    n_customers: u64,
    n_orders: u64,
    n_items: u64,
    n_sessions: u64,
    n_events: u64,
}

/// Latent and observable traits of one customer.
#[derive(Clone)]
struct Cust {
    lambda: f64,
    p: f64,
    s: f64,
    /// Clock sensitivity to festivals: `0.5 + s`.
    k: f64,
    pref: [f64; NCAT],
    pref_cum: [f64; NCAT],
    last_product: [u16; NCAT],
    device_pref: u8,
    source_cum: [f64; 6],
}

impl Ctx {
    fn new(params: &GenerateParams) -> Result<Self> {
        if params.years == 0 || params.years > 30 {
            bail!("years must be between 1 and 30, got {}", params.years);
        }
        let start_date = params
            .end
            .checked_sub_months(Months::new(12 * params.years))
            .context("start of history out of range")?;
        let start = start_date
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let end = params
            .end
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let n_days = ((end - start) / DAY + FUTURE_DAYS + 400) as usize;
        let mut boost = Vec::with_capacity(n_days);
        let mut date_prefix = Vec::with_capacity(n_days);
        for i in 0..n_days {
            let d = start_date
                .checked_add_days(Days::new(i as u64))
                .context("date out of range")?;
            boost.push(festival_boost(d));
            let s = format!("{:04}-{:02}-{:02}T", d.year(), d.month(), d.day());
            let mut a = [0u8; 11];
            a.copy_from_slice(&s.as_bytes()[..11]);
            date_prefix.push(a);
        }
        let mut bcum = Vec::with_capacity(n_days + 1);
        let mut acc = 0.0;
        bcum.push(0.0);
        for b in &boost {
            acc += b;
            bcum.push(acc);
        }

        let mut x = params.seed ^ 0x5245_5445_4e54_494f; // "RETENTIO"
        let mut key = [0u8; 32];
        for c in key.chunks_mut(8) {
            c.copy_from_slice(&splitmix64(&mut x).to_le_bytes());
        }

        // Catalogue: 8–15 products per category, popularity decaying with rank, a few out of stock.
        let mut prng = ChaCha8Rng::from_seed(key);
        prng.set_stream(u64::MAX);
        let mut products = Vec::new();
        let mut cat_products = Vec::new();
        let mut cat_product_cum = Vec::new();
        for (c, names) in PRODUCT_NAMES.iter().enumerate() {
            let n = prng.random_range(8..=15usize);
            let mut ids = Vec::with_capacity(n);
            let mut weights = Vec::with_capacity(n);
            for (rank, name) in names.iter().take(n).enumerate() {
                let price = (249 + 50 * prng.random_range(0..=25u64)) * 100;
                let in_stock = !prng.random_bool(0.05);
                ids.push(products.len() as u16);
                weights
                    .push(1.0 / (rank as f64 + 1.0).powf(0.8) * if in_stock { 1.0 } else { 0.3 });
                products.push(Product {
                    cat: c as u8,
                    name,
                    price,
                    in_stock,
                });
            }
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let mut cum: Vec<f64> = weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            *cum.last_mut().unwrap() = 1.0;
            cat_products.push(ids);
            cat_product_cum.push(cum);
        }

        let mut trans = [[0.0; NCAT]; NCAT];
        let mut trans_cum = [[0.0; NCAT]; NCAT];
        for c in 0..NCAT {
            let mut row = CAT_POP;
            if let Some(t) = CROSS_SELL[c] {
                for x in row.iter_mut() {
                    *x *= 1.0 - CROSS_SELL_WEIGHT;
                }
                row[t] += CROSS_SELL_WEIGHT;
            }
            let total: f64 = row.iter().sum();
            for x in row.iter_mut() {
                *x /= total;
            }
            trans[c] = row;
            trans_cum[c] = cumulate(&row);
        }

        let mut width = 7;
        while params.customers >= 10u64.pow(width as u32) {
            width += 1;
        }

        Ok(Self {
            key,
            n: params.customers,
            width,
            start,
            end,
            boost,
            bcum,
            date_prefix,
            products,
            cat_products,
            cat_product_cum,
            trans,
            trans_cum,
            pop_cum: cumulate(&CAT_POP),
            lambda_dist: Gamma::new(LAMBDA_SHAPE, 1.0 / LAMBDA_RATE).unwrap(),
            dropout_dist: Beta::new(DROPOUT_A, DROPOUT_B).unwrap(),
            sensitivity_dist: Beta::new(1.2, 2.4).unwrap(),
            pref_dists: CAT_POP
                .iter()
                .map(|p| Gamma::new(PREF_CONCENTRATION * p * NCAT as f64, 1.0).unwrap())
                .collect(),
        })
    }

    fn rng_for(&self, stream: u64) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::from_seed(self.key);
        r.set_stream(stream);
        r
    }

    fn days(&self, t: i64) -> f64 {
        (t - self.start) as f64 / DAY as f64
    }

    fn boost_at(&self, t: i64) -> f64 {
        let d = (t - self.start).div_euclid(DAY);
        if d < 0 {
            0.0
        } else {
            self.boost.get(d as usize).copied().unwrap_or(0.0)
        }
    }

    /// Mechanism 5/6: the purchase clock. `W(t) = t + k * ∫ b`, with `k = 0.5 + s`; gaps are drawn
    /// in W-time, so they shrink in real time during festivals, more so for sensitive customers.
    fn warp(&self, t: f64, k: f64) -> f64 {
        let t = t.max(0.0);
        let n = self.boost.len();
        let d = t.floor() as usize;
        if d >= n {
            return t + k * self.bcum[n];
        }
        t + k * (self.bcum[d] + self.boost[d] * (t - d as f64))
    }

    fn unwarp(&self, w: f64, k: f64) -> f64 {
        let n = self.boost.len();
        let wn = n as f64 + k * self.bcum[n];
        if w >= wn {
            return n as f64 + (w - wn);
        }
        if w <= 0.0 {
            return 0.0;
        }
        let (mut lo, mut hi) = (0usize, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if mid as f64 + k * self.bcum[mid] <= w {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo as f64 + (w - (lo as f64 + k * self.bcum[lo])) / (1.0 + k * self.boost[lo])
    }

    /// Mechanisms 1+2: mean gap (in W-days) after an order whose main category is `cat`.
    fn gap_mean(&self, cat: usize, lambda: f64) -> f64 {
        (CYCLE_DAYS[cat] / lambda)
            .sqrt()
            .clamp(MIN_GAP_MEAN_DAYS, MAX_GAP_MEAN_DAYS)
    }

    /// Next order time after an order at `t` with main category `cat`: a Gamma(3, mean/3) gap on
    /// the festival-warped clock (sum of three exponentials).
    fn next_order_time(&self, rng: &mut ChaCha8Rng, t: i64, cat: usize, c: &Cust) -> i64 {
        let mean = self.gap_mean(cat, c.lambda);
        let prod = unit_open0(rng) * unit_open0(rng) * unit_open0(rng);
        let gap = -(mean / GAP_SHAPE) * prod.ln();
        let w = self.warp(self.days(t), c.k) + gap;
        let tn = self.unwarp(w, c.k);
        let secs = self.start.saturating_add((tn * DAY as f64).round() as i64);
        secs.max(t + HOUR)
    }

    /// Mechanism 3: main category of the next order.
    fn next_category(&self, rng: &mut ChaCha8Rng, last: usize, c: &Cust) -> usize {
        let u: f64 = rng.random();
        if u < P_REPEAT_CATEGORY {
            last
        } else if u < P_REPEAT_CATEGORY + P_TRANSITION {
            sample_cum(&self.trans_cum[last], rng.random())
        } else {
            sample_cum(&c.pref_cum, rng.random())
        }
    }

    fn pick_product(&self, rng: &mut ChaCha8Rng, cat: usize) -> u16 {
        let i = sample_cum(&self.cat_product_cum[cat], rng.random());
        self.cat_products[cat][i]
    }

    /// Orders have 1–4 lines, at most one per product, the first from the main category (often
    /// the product the customer bought last time in it: replenishment), the others mostly from
    /// the main category too, else a cross-sell or a preferred category.
    fn pick_items(&self, rng: &mut ChaCha8Rng, c: &mut Cust, cat: usize) -> Items {
        let u: f64 = rng.random();
        let n = if u < 0.45 {
            1
        } else if u < 0.75 {
            2
        } else if u < 0.90 {
            3
        } else {
            4
        };
        let qty = |rng: &mut ChaCha8Rng| -> u8 {
            let u: f64 = rng.random();
            if u < 0.78 {
                1
            } else if u < 0.95 {
                2
            } else {
                3
            }
        };
        let mut items = Items {
            n: 0,
            v: [(0, 0); 4],
        };
        let main = if c.last_product[cat] != NO_PRODUCT && rng.random_bool(0.7) {
            c.last_product[cat]
        } else {
            self.pick_product(rng, cat)
        };
        items.v[0] = (main, qty(rng));
        items.n = 1;
        for _ in 1..n {
            for _try in 0..4 {
                let u: f64 = rng.random();
                let pc = if u < 0.55 {
                    cat
                } else if u < 0.8 {
                    sample_cum(&self.trans_cum[cat], rng.random())
                } else {
                    sample_cum(&c.pref_cum, rng.random())
                };
                let pr = if pc != cat && c.last_product[pc] != NO_PRODUCT && rng.random_bool(0.5) {
                    c.last_product[pc]
                } else {
                    self.pick_product(rng, pc)
                };
                if !items.contains(pr) {
                    items.v[items.n as usize] = (pr, qty(rng));
                    items.n += 1;
                    break;
                }
            }
        }
        for &(pr, _) in items.as_slice() {
            c.last_product[self.products[pr as usize].cat as usize] = pr;
        }
        items
    }

    /// Mechanism 6: status and discount. The chance of a discount rises with the sensitivity s,
    /// and more so in festival/sale seasons; discounts are 10–20% of the subtotal.
    fn order_terms(&self, rng: &mut ChaCha8Rng, t: i64, items: &Items, c: &Cust) -> (u8, u64, u64) {
        let subtotal: u64 = items
            .as_slice()
            .iter()
            .map(|&(p, q)| self.products[p as usize].price * q as u64)
            .sum();
        let b = self.boost_at(t);
        let p_disc = (0.03 + 0.45 * c.s + 0.8 * b * c.s).min(0.95);
        let discount = if rng.random_bool(p_disc) {
            let u: f64 = rng.random();
            let pct = if u < 0.45 - b * 0.4 {
                10
            } else if u < 0.8 - b * 0.3 {
                15
            } else {
                20
            };
            subtotal * pct / 100
        } else {
            0
        };
        let u: f64 = rng.random();
        let status = if u < P_COMPLETED {
            0
        } else if u < P_COMPLETED + P_CANCELLED {
            1
        } else {
            2
        };
        (status, subtotal, discount)
    }

    fn pick_source(&self, rng: &mut ChaCha8Rng, c: &Cust) -> u8 {
        sample_cum(&c.source_cum, rng.random()) as u8
    }

    fn pick_device(&self, rng: &mut ChaCha8Rng, c: &Cust) -> u8 {
        if rng.random_bool(0.8) {
            c.device_pref
        } else {
            rng.random_range(0..3u8)
        }
    }

    fn largest_spend_category(&self, items: &Items) -> usize {
        let mut spend = [0u64; NCAT];
        for &(p, q) in items.as_slice() {
            let pr = &self.products[p as usize];
            spend[pr.cat as usize] += pr.price * q as u64;
        }
        let mut best = 0;
        for i in 1..NCAT {
            if spend[i] > spend[best] {
                best = i;
            }
        }
        best
    }

    /// Mechanism 4: the purchase session (views, an add_to_cart per line, checkout_start, then
    /// the order) plus 0–2 earlier sessions in the previous week with views (and sometimes cart
    /// adds) in the ordered category. Sessions starting before `lower` are skipped; sessions and
    /// events at or after `cutoff` are dropped (used to leak the future next order into the
    /// last days before `end`).
    #[allow(clippy::too_many_arguments)]
    fn order_sessions(
        &self,
        rng: &mut ChaCha8Rng,
        c: &Cust,
        sc: &mut Scratch,
        t_order: i64,
        cat: usize,
        items: &Items,
        lower: i64,
        cutoff: i64,
    ) {
        let u: f64 = rng.random();
        let extra = if u < 0.5 {
            0
        } else if u < 0.85 {
            1
        } else {
            2
        };
        for _ in 0..extra {
            let st = t_order - rng.random_range(HOUR..7 * DAY);
            if st < lower {
                continue;
            }
            let src = self.pick_source(rng, c);
            let dev = self.pick_device(rng, c);
            self.pre_session(rng, sc, st, src, dev, cat, items.v[0].0, cutoff);
        }
        let src = self.pick_source(rng, c);
        let dev = self.pick_device(rng, c);
        let si = self.begin_session(sc, 0, src, dev);
        let off = self.purchase_events(rng, sc, cat, items);
        self.end_session(sc, si);
        shift_session(sc, si, t_order - off);
        apply_cutoff(sc, si, cutoff);
    }

    /// Events of a purchase session relative to its start; returns the order's offset.
    fn purchase_events(
        &self,
        rng: &mut ChaCha8Rng,
        sc: &mut Scratch,
        cat: usize,
        items: &Items,
    ) -> i64 {
        let mut t = rng.random_range(5..30);
        if rng.random_bool(0.3) {
            push_ev(rng, sc, t, EV_SEARCH, NO_PRODUCT);
            t += rng.random_range(10..60);
        }
        let main = items.v[0].0;
        push_ev(rng, sc, t, EV_VIEW, main);
        t += rng.random_range(20..180);
        if rng.random_bool(0.4) {
            let other = self.pick_product(rng, cat);
            if other != main {
                push_ev(rng, sc, t, EV_VIEW, other);
                t += rng.random_range(15..120);
            }
        }
        for (i, &(pr, _)) in items.as_slice().iter().enumerate() {
            if i > 0 && rng.random_bool(0.5) {
                push_ev(rng, sc, t, EV_VIEW, pr);
                t += rng.random_range(15..120);
            }
            push_ev(rng, sc, t, EV_ATC, pr);
            t += rng.random_range(5..60);
        }
        // checkout_start carries the basket's main product (only search has no product).
        push_ev(rng, sc, t, EV_CHECKOUT, main);
        t + rng.random_range(30..300)
    }

    /// A browsing session ahead of an order, focused on its category.
    #[allow(clippy::too_many_arguments)]
    fn pre_session(
        &self,
        rng: &mut ChaCha8Rng,
        sc: &mut Scratch,
        start: i64,
        src: u8,
        dev: u8,
        cat: usize,
        main: u16,
        cutoff: i64,
    ) {
        let si = self.begin_session(sc, start, src, dev);
        let mut t = start + rng.random_range(5..30);
        if rng.random_bool(0.35) {
            push_ev(rng, sc, t, EV_SEARCH, NO_PRODUCT);
            t += rng.random_range(10..60);
        }
        let views = rng.random_range(1..=4);
        for j in 0..views {
            let pr = if j == 0 && rng.random_bool(0.6) {
                main
            } else {
                self.pick_product(rng, cat)
            };
            push_ev(rng, sc, t, EV_VIEW, pr);
            t += rng.random_range(15..150);
        }
        if rng.random_bool(0.35) {
            push_ev(rng, sc, t, EV_ATC, main);
            t += rng.random_range(5..60);
            if rng.random_bool(0.4) {
                push_ev(rng, sc, t, EV_REMOVE, main);
                t += rng.random_range(5..60);
            }
        }
        if rng.random_bool(0.08) {
            push_ev(rng, sc, t, EV_WISHLIST, main);
        }
        self.end_session(sc, si);
        apply_cutoff(sc, si, cutoff);
    }

    /// Background browsing: views of preferred or random categories, occasional cart adds.
    fn background_session(&self, rng: &mut ChaCha8Rng, c: &Cust, sc: &mut Scratch, start: i64) {
        let src = self.pick_source(rng, c);
        let dev = self.pick_device(rng, c);
        let si = self.begin_session(sc, start, src, dev);
        let mut t = start + rng.random_range(5..30);
        if rng.random_bool(0.4) {
            push_ev(rng, sc, t, EV_SEARCH, NO_PRODUCT);
            t += rng.random_range(10..60);
        }
        let mut cat = if rng.random_bool(0.5) {
            sample_cum(&c.pref_cum, rng.random())
        } else {
            sample_cum(&self.pop_cum, rng.random())
        };
        let views = rng.random_range(1..=5);
        let mut last = NO_PRODUCT;
        for _ in 0..views {
            if rng.random_bool(0.2) {
                cat = sample_cum(&self.pop_cum, rng.random());
            }
            last = self.pick_product(rng, cat);
            push_ev(rng, sc, t, EV_VIEW, last);
            t += rng.random_range(15..150);
        }
        if rng.random_bool(0.08) {
            push_ev(rng, sc, t, EV_ATC, last);
            t += rng.random_range(5..60);
            if rng.random_bool(0.3) {
                push_ev(rng, sc, t, EV_REMOVE, last);
                t += rng.random_range(5..60);
            }
        }
        if rng.random_bool(0.05) {
            push_ev(rng, sc, t, EV_WISHLIST, last);
        }
        self.end_session(sc, si);
        apply_cutoff(sc, si, self.end);
    }

    /// Mechanism 7: a bot burst — a long run of views seconds apart over random products.
    fn bot_session(&self, rng: &mut ChaCha8Rng, sc: &mut Scratch, start: i64) {
        let si = self.begin_session(sc, start, 5, 1);
        let mut t = start + rng.random_range(1..5);
        let views = rng.random_range(40..=200);
        for _ in 0..views {
            let pr = rng.random_range(0..self.products.len()) as u16;
            push_ev(rng, sc, t, EV_VIEW, pr);
            t += rng.random_range(1..=4);
        }
        self.end_session(sc, si);
        apply_cutoff(sc, si, self.end);
    }

    fn begin_session(&self, sc: &mut Scratch, start: i64, source: u8, device: u8) -> usize {
        let ev0 = sc.evs.len() as u32;
        sc.sess.push(Sess {
            start,
            source,
            device,
            ev0,
            ev1: ev0,
        });
        sc.sess.len() - 1
    }

    fn end_session(&self, sc: &mut Scratch, si: usize) {
        sc.sess[si].ev1 = sc.evs.len() as u32;
    }

    /// P(completed order in [end, end+90d)) for a customer alive at `end` whose last order was at
    /// `t_last` with main category `last_cat`. The first future gap is Gamma(3, θ) conditioned on
    /// exceeding the already elapsed W-time, which is closed form for shape 3. If that first
    /// order is not completed (5%), the customer may survive dropout and order again inside the
    /// window: that term is integrated numerically over the first order's time, mixing over the
    /// distribution of its main category. Only a third order (< 0.3% weight) is ignored.
    fn true_p_return(&self, c: &Cust, t_last: i64, last_cat: usize) -> f64 {
        let k = c.k;
        let w_last = self.warp(self.days(t_last), k);
        let x1 = (self.warp(self.days(self.end), k) - w_last).max(0.0);
        let x2 = self.warp(self.days(self.end + RETURN_WINDOW_DAYS * DAY), k) - w_last;
        let theta = self.gap_mean(last_cat, c.lambda) / GAP_SHAPE;
        let (y1, y2) = (x1 / theta, x2 / theta);
        let poly = |y: f64| 1.0 + y + 0.5 * y * y;
        let p1 = 1.0 - (-(y2 - y1)).exp() * poly(y2) / poly(y1);

        // Distribution of the first future order's main category.
        let mut pi = [0.0; NCAT];
        for (j, x) in pi.iter_mut().enumerate() {
            *x = P_TRANSITION * self.trans[last_cat][j]
                + (1.0 - P_REPEAT_CATEGORY - P_TRANSITION) * c.pref[j];
        }
        pi[last_cat] += P_REPEAT_CATEGORY;
        let thetas: [f64; NCAT] = std::array::from_fn(|j| self.gap_mean(j, c.lambda) / GAP_SHAPE);

        const GL: [(f64, f64); 4] = [
            (0.183_434_642_495_65, 0.362_683_783_378_362),
            (0.525_532_409_916_329, 0.313_706_645_877_887),
            (0.796_666_477_413_627, 0.222_381_034_453_375),
            (0.960_289_856_497_536, 0.101_228_536_290_376),
        ];
        let mut term = 0.0;
        let pieces = 2;
        let h = (x2 - x1) / pieces as f64;
        for piece in 0..pieces {
            let a = x1 + h * piece as f64;
            let mid = a + 0.5 * h;
            for &(node, weight) in &GL {
                for g in [mid - 0.5 * h * node, mid + 0.5 * h * node] {
                    let y = g / theta;
                    // conditional density of the first gap given it exceeds x1
                    let dens = y * y / (2.0 * theta) * (-(y - y1)).exp() / poly(y1);
                    let r = x2 - g;
                    let q: f64 = pi
                        .iter()
                        .zip(&thetas)
                        .map(|(p, th)| p * (1.0 - gamma3_sf(r / th)))
                        .sum();
                    term += 0.5 * h * weight * dens * q;
                }
            }
        }
        let p = P_COMPLETED * p1 + (1.0 - P_COMPLETED) * (1.0 - c.p) * P_COMPLETED * term;
        p.clamp(0.0, 1.0)
    }

    // --------------------------------------------------------------------------------------
    // One customer
    // --------------------------------------------------------------------------------------

    fn render_chunk(&self, k: u64, sc: &mut Scratch) -> Chunk {
        let from = k * CHUNK;
        let to = (from + CHUNK).min(self.n);
        let mut chunk = Chunk::default();
        for idx in from..to {
            self.customer(idx, sc, &mut chunk);
        }
        chunk
    }

    fn customer(&self, idx: u64, sc: &mut Scratch, out: &mut Chunk) {
        let mut rng = self.rng_for(idx.wrapping_mul(2));
        let mut frng = self.rng_for(idx.wrapping_mul(2).wrapping_add(1));
        sc.orders.clear();
        sc.sess.clear();
        sc.evs.clear();

        // ---- Profile (mechanism 7) ----
        let cu: f64 = rng.random();
        let country = COUNTRIES
            .iter()
            .position(|c| cu < c.cum)
            .unwrap_or(COUNTRIES.len() - 1);
        let intl = if country == 0 {
            rng.random_bool(0.05)
        } else {
            rng.random_bool(0.5)
        };
        let first_name = if intl {
            INTL_NAMES[rng.random_range(0..INTL_NAMES.len())]
        } else {
            INDIAN_NAMES[rng.random_range(0..INDIAN_NAMES.len())]
        };
        let has_email = rng.random_bool(0.85);
        let has_phone = rng.random_bool(0.70);
        let email_opt = has_email && rng.random_bool(0.70);
        let sms_opt = has_phone && rng.random_bool(0.40);
        let wa_opt = has_phone && rng.random_bool(0.50);
        let phone_lead: u64 = rng.random_range(0..4);
        let du: f64 = rng.random();
        let device_pref = if du < 0.7 {
            0
        } else if du < 0.92 {
            1
        } else {
            2
        };
        let is_bot = rng.random_bool(BOT_SHARE);
        let s = self.sensitivity_dist.sample(&mut rng);
        let lambda = self.lambda_dist.sample(&mut rng).clamp(5e-4, 0.3);
        let p = self.dropout_dist.sample(&mut rng).clamp(1e-3, 0.999);
        // Mechanism 3: Dirichlet(0.6 * popularity * 10) preference — concentrated.
        let mut pref = [0.0; NCAT];
        for (x, d) in pref.iter_mut().zip(&self.pref_dists) {
            *x = d.sample(&mut rng).max(1e-300);
        }
        let total: f64 = pref.iter().sum();
        for x in pref.iter_mut() {
            *x /= total;
        }
        let mut fav = 0;
        for i in 1..NCAT {
            if pref[i] > pref[fav] {
                fav = i;
            }
        }
        // Mechanism 1: acquisition time, stratified by index so customer ids grow with
        // created_at; density rising linearly by ACQ_GROWTH towards `end`.
        let u = (idx as f64 + rng.random::<f64>()) / self.n as f64;
        let g = ACQ_GROWTH;
        let x = ((1.0 + 2.0 * g * u * (1.0 + g / 2.0)).sqrt() - 1.0) / g;
        let acq_span = (self.end - 3 * HOUR - self.start) as f64;
        let t0 = self.start + (x.clamp(0.0, 1.0) * acq_span) as i64;

        let source_cum = cumulate(&[
            0.25,
            0.15,
            0.15,
            if email_opt { 0.15 } else { 0.0 },
            if wa_opt { 0.12 } else { 0.0 },
            0.30,
        ]);
        let mut c = Cust {
            lambda,
            p,
            s,
            k: 0.5 + s,
            pref,
            pref_cum: cumulate(&pref),
            last_product: [NO_PRODUCT; NCAT],
            device_pref,
            source_cum,
        };

        // ---- History of orders (mechanisms 1, 2, 3, 6, 8) ----
        let acq_source_cum = cumulate(&[0.3, 0.3, 0.3, 0.0, 0.0, 0.1]);
        let mut alive = !is_bot;
        let mut dropout_at: Option<i64> = None;
        let mut pending: Option<i64> = None;
        let mut last_cat = fav;
        let has_first_order = !is_bot || rng.random_bool(0.4);
        if !has_first_order {
            // A bot that never buys: its first visit is its registration.
        } else {
            // First order right at acquisition: the first session starts at created_at.
            let cat = sample_cum(&c.pref_cum, rng.random());
            let items = self.pick_items(&mut rng, &mut c, cat);
            let u: f64 = rng.random();
            let extra = if is_bot || u < 0.6 {
                0
            } else if u < 0.9 {
                1
            } else {
                2
            };
            let acq_src = sample_cum(&acq_source_cum, rng.random()) as u8;
            let mut purchase_start = t0;
            if extra > 0 {
                let dev = self.pick_device(&mut rng, &c);
                self.pre_session(&mut rng, sc, t0, acq_src, dev, cat, items.v[0].0, self.end);
                let room = (self.end - 2 * HOUR - t0).max(HOUR + 1);
                purchase_start = t0 + rng.random_range(HOUR..4 * DAY).min(room);
                if extra > 1 && purchase_start - t0 > 2 * HOUR {
                    let st = rng.random_range(t0 + HOUR..purchase_start - HOUR / 2);
                    let src = self.pick_source(&mut rng, &c);
                    let dev = self.pick_device(&mut rng, &c);
                    self.pre_session(&mut rng, sc, st, src, dev, cat, items.v[0].0, self.end);
                }
            }
            let src = if extra > 0 {
                self.pick_source(&mut rng, &c)
            } else {
                acq_src
            };
            let dev = self.pick_device(&mut rng, &c);
            let si = self.begin_session(sc, 0, src, dev);
            let off = self.purchase_events(&mut rng, sc, cat, &items);
            self.end_session(sc, si);
            shift_session(sc, si, purchase_start);
            let t = purchase_start + off;
            let (status, subtotal, discount) = self.order_terms(&mut rng, t, &items, &c);
            sc.orders.push(OrderRec {
                t,
                items,
                status,
                subtotal,
                discount,
            });
            last_cat = cat;

            // Later orders: dropout after each purchase (BG/NBD), else a renewal gap.
            if !is_bot {
                let mut t = t;
                loop {
                    if rng.random_bool(c.p) {
                        alive = false;
                        dropout_at = Some(t);
                        break;
                    }
                    let tn = self.next_order_time(&mut rng, t, last_cat, &c);
                    if tn >= self.end || sc.orders.len() >= MAX_ORDERS {
                        pending = Some(tn);
                        break;
                    }
                    let cat = self.next_category(&mut rng, last_cat, &c);
                    let items = self.pick_items(&mut rng, &mut c, cat);
                    let (status, subtotal, discount) = self.order_terms(&mut rng, tn, &items, &c);
                    sc.orders.push(OrderRec {
                        t: tn,
                        items,
                        status,
                        subtotal,
                        discount,
                    });
                    let lower = t0.max(tn - 7 * DAY);
                    self.order_sessions(&mut rng, &c, sc, tn, cat, &items, lower, self.end);
                    t = tn;
                    last_cat = cat;
                }
            }
        }
        let t_last = sc.orders.last().map(|o| o.t);

        // ---- Simulated future (separate stream; the order history above is unaffected) ----
        // The pending order (the first renewal at/after `end`) continues with the same process.
        let mut next_order: Option<(i64, usize)> = None;
        let mut true_p = 0.0;
        if let (true, Some(tp), Some(tl)) = (alive, pending, t_last) {
            true_p = self.true_p_return(&c, tl, last_cat);
            let horizon = self.end + FUTURE_DAYS * DAY;
            let mut fc = c.clone();
            let mut t = tp;
            let mut lc = last_cat;
            let mut first = true;
            while t < horizon {
                let cat = self.next_category(&mut frng, lc, &fc);
                let items = self.pick_items(&mut frng, &mut fc, cat);
                let (status, _, _) = self.order_terms(&mut frng, t, &items, &fc);
                if first {
                    // Mechanism 4 (the key leak): the browsing that precedes the next order
                    // starts before `end` when that order is imminent.
                    first = false;
                    let lower = t0.max(t - 7 * DAY);
                    self.order_sessions(&mut frng, &fc, sc, t, cat, &items, lower, self.end);
                }
                if status == ST_COMPLETED {
                    next_order = Some((t, self.largest_spend_category(&items)));
                    break;
                }
                if frng.random_bool(fc.p) {
                    break;
                }
                t = self.next_order_time(&mut frng, t, cat, &fc);
                lc = cat;
            }
        }

        // ---- Browsing (mechanism 4/7) ----
        if is_bot {
            let bursts = rng.random_range(3..=10);
            for _ in 0..bursts {
                let st = rng.random_range(t0..self.end);
                self.bot_session(&mut rng, sc, st);
            }
        } else {
            // Background sessions: a Poisson process whose rate grows with λ; after dropout it
            // falls to a tenth (alive customers browse more than dropped-out ones).
            let rate = (0.002 + 0.12 * lambda).min(0.1);
            let mut t = t0;
            loop {
                let gap = -unit_open0(&mut rng).ln() / rate * DAY as f64;
                t += gap as i64 + 1;
                if t >= self.end || sc.sess.len() >= MAX_SESSIONS - 10 {
                    break;
                }
                if let Some(d) = dropout_at
                    && t > d
                    && !rng.random_bool(0.1)
                {
                    continue;
                }
                self.background_session(&mut rng, &c, sc, t);
            }
        }

        // ---- Render ----
        let mut cid = [0u8; 24];
        let cid_len = {
            let mut tmp = Vec::with_capacity(24);
            push_padded(&mut tmp, idx + 1, self.width);
            cid[..tmp.len()].copy_from_slice(&tmp);
            tmp.len()
        };
        let cid = &cid[..cid_len];

        // customers.csv
        let b = &mut out.customers;
        b.push(b'C');
        b.extend_from_slice(cid);
        b.push(b',');
        if has_email {
            for ch in first_name.bytes() {
                b.push(ch.to_ascii_lowercase());
            }
            b.extend_from_slice(b".c");
            b.extend_from_slice(cid);
            b.extend_from_slice(b"@example.com");
        }
        b.push(b',');
        if has_phone {
            push_phone(b, country, phone_lead, idx);
        }
        b.push(b',');
        push_text(b, first_name);
        b.push(b',');
        b.extend_from_slice(COUNTRIES[country].code.as_bytes());
        b.push(b',');
        b.extend_from_slice(COUNTRIES[country].tz.as_bytes());
        b.push(b',');
        push_bool(b, email_opt);
        b.push(b',');
        push_bool(b, sms_opt);
        b.push(b',');
        push_bool(b, wa_opt);
        b.push(b',');
        self.push_ts(b, t0);
        b.push(b',');
        b.extend_from_slice(loyalty_tier(&sc.orders).as_bytes());
        b.push(b',');
        b.extend_from_slice(acquisition_channel(idx).as_bytes());
        b.push(b'\n');
        out.n_customers += 1;

        // orders.csv / order_items.csv
        for (i, o) in sc.orders.iter().enumerate() {
            let b = &mut out.orders;
            let id_start = b.len();
            b.push(b'O');
            b.extend_from_slice(cid);
            push_padded(b, i as u64 + 1, 4);
            let id_end = b.len();
            b.extend_from_slice(b",C");
            b.extend_from_slice(cid);
            b.push(b',');
            self.push_ts(b, o.t);
            b.push(b',');
            push_money(b, o.subtotal - o.discount);
            b.extend_from_slice(b",INR,");
            b.extend_from_slice(STATUSES[o.status as usize].as_bytes());
            b.push(b',');
            push_money(b, o.discount);
            b.push(b'\n');
            for &(pr, q) in o.items.as_slice() {
                let ib = &mut out.items;
                ib.extend_from_slice(&out.orders[id_start..id_end]);
                ib.push(b',');
                push_product_id(ib, pr);
                ib.push(b',');
                push_u64(ib, q as u64);
                ib.push(b',');
                push_money(ib, self.products[pr as usize].price);
                ib.push(b'\n');
                out.n_items += 1;
            }
        }
        out.n_orders += sc.orders.len() as u64;

        // sessions.csv / events.csv, chronological per customer
        sc.order.clear();
        sc.order.extend(0..sc.sess.len() as u32);
        {
            let sess = &sc.sess;
            sc.order.sort_by_key(|&i| (sess[i as usize].start, i));
        }
        let mut ev_seq: u64 = 0;
        for (seq, &si) in sc.order.iter().enumerate() {
            let s = sc.sess[si as usize];
            let b = &mut out.sessions;
            let id_start = b.len();
            b.push(b'S');
            b.extend_from_slice(cid);
            push_padded(b, seq as u64 + 1, 5);
            let id_end = b.len();
            b.extend_from_slice(b",C");
            b.extend_from_slice(cid);
            b.push(b',');
            self.push_ts(b, s.start);
            b.push(b',');
            b.extend_from_slice(SOURCES[s.source as usize].as_bytes());
            b.push(b',');
            b.extend_from_slice(DEVICES[s.device as usize].as_bytes());
            b.push(b'\n');
            out.n_sessions += 1;
            for e in &sc.evs[s.ev0 as usize..s.ev1 as usize] {
                if ev_seq as usize >= MAX_EVENTS {
                    break;
                }
                ev_seq += 1;
                let eb = &mut out.events;
                eb.push(b'E');
                eb.extend_from_slice(cid);
                push_padded(eb, ev_seq, 6);
                eb.extend_from_slice(b",C");
                eb.extend_from_slice(cid);
                eb.push(b',');
                eb.extend_from_slice(EVENT_TYPES[e.typ as usize].as_bytes());
                eb.push(b',');
                self.push_ts(eb, e.t);
                eb.push(b',');
                if e.product != NO_PRODUCT {
                    push_product_id(eb, e.product);
                }
                eb.push(b',');
                eb.extend_from_slice(&out.sessions[id_start..id_end]);
                eb.push(b'\n');
            }
        }
        out.n_events += ev_seq;

        // ground_truth.csv
        let b = &mut out.truth;
        b.push(b'C');
        b.extend_from_slice(cid);
        let (lam_out, p_out) = if is_bot { (0.0, 1.0) } else { (lambda, p) };
        let _ = write!(b, ",{lam_out:.6},{p_out:.4},");
        push_bool(b, alive);
        b.push(b',');
        if let Some(d) = dropout_at {
            self.push_ts(b, d);
        }
        b.push(b',');
        push_text(b, CATEGORIES[fav]);
        let _ = write!(b, ",{s:.3},");
        push_bool(b, is_bot);
        b.push(b',');
        push_u64(b, sc.orders.len() as u64);
        let _ = write!(b, ",{true_p:.4},");
        if let Some((t, cat)) = next_order {
            self.push_ts(b, t);
            b.push(b',');
            push_text(b, CATEGORIES[cat]);
        } else {
            b.push(b',');
        }
        b.push(b'\n');
    }

    /// RFC 3339 UTC, second precision.
    fn push_ts(&self, b: &mut Vec<u8>, secs: i64) {
        let rel = secs - self.start;
        let day = rel.div_euclid(DAY);
        if day >= 0 && (day as usize) < self.date_prefix.len() {
            b.extend_from_slice(&self.date_prefix[day as usize]);
            let sod = rel.rem_euclid(DAY) as u64;
            push_2(b, sod / 3600);
            b.push(b':');
            push_2(b, sod / 60 % 60);
            b.push(b':');
            push_2(b, sod % 60);
            b.push(b'Z');
        } else {
            let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
            let _ = write!(b, "{}", dt.format("%Y-%m-%dT%H:%M:%SZ"));
        }
    }
}

/// Mechanism 7: ~1% of events are logged twice (same fields, a new event_id).
fn push_ev(rng: &mut ChaCha8Rng, sc: &mut Scratch, t: i64, typ: u8, product: u16) {
    let e = Ev { t, product, typ };
    sc.evs.push(e);
    if rng.random_bool(DUP_EVENT_SHARE) {
        sc.evs.push(e);
    }
}

fn shift_session(sc: &mut Scratch, si: usize, delta: i64) {
    let s = &mut sc.sess[si];
    s.start += delta;
    for e in &mut sc.evs[s.ev0 as usize..s.ev1 as usize] {
        e.t += delta;
    }
}

/// Drops a session starting at/after `cutoff`, else its events at/after `cutoff`. Only valid
/// for the most recently pushed session.
fn apply_cutoff(sc: &mut Scratch, si: usize, cutoff: i64) {
    debug_assert_eq!(si, sc.sess.len() - 1);
    let s = sc.sess[si];
    if s.start >= cutoff {
        sc.evs.truncate(s.ev0 as usize);
        sc.sess.pop();
        return;
    }
    while sc.evs.len() > s.ev0 as usize && sc.evs.last().is_some_and(|e| e.t >= cutoff) {
        sc.evs.pop();
    }
    sc.sess[si].ev1 = sc.evs.len() as u32;
}

// ------------------------------------------------------------------------------------------
// Fast text formatting
// ------------------------------------------------------------------------------------------

fn push_u64(b: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

fn push_padded(b: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = 1;
    let mut x = v;
    while x >= 10 {
        x /= 10;
        digits += 1;
    }
    for _ in digits..width {
        b.push(b'0');
    }
    push_u64(b, v);
}

fn push_2(b: &mut Vec<u8>, v: u64) {
    b.push(b'0' + (v / 10) as u8);
    b.push(b'0' + (v % 10) as u8);
}

/// Paise as rupees with two decimals.
fn push_money(b: &mut Vec<u8>, paise: u64) {
    push_u64(b, paise / 100);
    b.push(b'.');
    push_2(b, paise % 100);
}

fn push_bool(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(if v { b"true" } else { b"false" });
}

fn push_product_id(b: &mut Vec<u8>, p: u16) {
    b.push(b'P');
    push_padded(b, p as u64 + 1, 3);
}

/// A text field, quoted per RFC 4180 when it contains a comma, quote or line break.
fn push_text(b: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
        b.push(b'"');
        for c in s.bytes() {
            if c == b'"' {
                b.push(b'"');
            }
            b.push(c);
        }
        b.push(b'"');
    } else {
        b.extend_from_slice(s.as_bytes());
    }
}

/// E.164 numbers; the subscriber digits are an affine bijection of the customer index, so
/// numbers do not repeat within a country prefix.
fn push_phone(b: &mut Vec<u8>, country: usize, lead: u64, idx: u64) {
    let perm = |m: u32| -> u64 {
        let modulus = 10u128.pow(m);
        ((idx as u128 * 738_219_461 + 482_913_577) % modulus) as u64
    };
    match COUNTRIES[country].code {
        "IN" => {
            b.extend_from_slice(b"+91");
            push_u64(b, 9 - lead); // 9, 8, 7 or 6
            push_padded(b, perm(9), 9);
        }
        "US" => {
            b.extend_from_slice(b"+1");
            push_u64(b, 201 + (idx * 37 + lead) % 789);
            push_padded(b, perm(7), 7);
        }
        "GB" => {
            b.extend_from_slice(b"+447");
            push_padded(b, perm(9), 9);
        }
        "AE" => {
            b.extend_from_slice(b"+9715");
            push_padded(b, perm(8), 8);
        }
        "SG" => {
            b.extend_from_slice(b"+65");
            push_u64(b, 8 + lead % 2);
            push_padded(b, perm(7), 7);
        }
        _ => {
            b.extend_from_slice(b"+614");
            push_padded(b, perm(8), 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    const END: &str = "2025-06-01T00:00:00Z";

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "retentiond-gen-{tag}-{}-{nanos}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn params(customers: u64, seed: u64) -> GenerateParams {
        GenerateParams::new(
            customers,
            seed,
            NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        )
    }

    const FILES: [&str; 7] = [
        "customers.csv",
        "products.csv",
        "orders.csv",
        "order_items.csv",
        "sessions.csv",
        "events.csv",
        "ground_truth.csv",
    ];

    /// Rows of a file as maps column -> value, parsed with a real CSV reader.
    struct Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    }
    impl Table {
        fn read(dir: &Path, name: &str) -> Table {
            let mut r = csv::ReaderBuilder::new().from_path(dir.join(name)).unwrap();
            let headers = r.headers().unwrap().iter().map(String::from).collect();
            let rows = r
                .records()
                .map(|rec| rec.unwrap().iter().map(String::from).collect())
                .collect();
            Table { headers, rows }
        }
        fn col(&self, name: &str) -> usize {
            self.headers
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no {name}"))
        }
    }

    fn paise(s: &str) -> i64 {
        let (a, b) = s.split_once('.').expect("two decimals");
        assert_eq!(b.len(), 2, "{s}");
        a.parse::<i64>().unwrap() * 100 + b.parse::<i64>().unwrap()
    }

    struct Data {
        _dir: TempDir,
        summary: GenerateSummary,
        customers: Table,
        products: Table,
        orders: Table,
        items: Table,
        sessions: Table,
        events: Table,
        truth: Table,
    }

    fn generate_data(customers: u64, seed: u64) -> Data {
        let dir = TempDir::new("data");
        let calls = std::cell::Cell::new(0u64);
        let summary = generate(&params(customers, seed), &dir.0, &|done| {
            assert!(done > calls.get());
            calls.set(done);
        })
        .unwrap();
        assert_eq!(calls.get(), customers);
        Data {
            summary,
            customers: Table::read(&dir.0, "customers.csv"),
            products: Table::read(&dir.0, "products.csv"),
            orders: Table::read(&dir.0, "orders.csv"),
            items: Table::read(&dir.0, "order_items.csv"),
            sessions: Table::read(&dir.0, "sessions.csv"),
            events: Table::read(&dir.0, "events.csv"),
            truth: Table::read(&dir.0, "ground_truth.csv"),
            _dir: dir,
        }
    }

    #[test]
    fn same_params_give_identical_files() {
        let (a, b, c) = (
            TempDir::new("det-a"),
            TempDir::new("det-b"),
            TempDir::new("det-c"),
        );
        // 2,500 customers span two chunks, so chunk ordering across threads is exercised.
        let p = params(2_500, 7);
        let sa = generate(&p, &a.0, &|_| {}).unwrap();
        let sb = generate(&p, &b.0, &|_| {}).unwrap();
        assert_eq!(sa, sb);
        for f in FILES {
            let x = std::fs::read(a.0.join(f)).unwrap();
            let y = std::fs::read(b.0.join(f)).unwrap();
            assert!(x == y, "{f} differs between identical runs");
        }
        generate(&params(2_500, 8), &c.0, &|_| {}).unwrap();
        let x = std::fs::read(a.0.join("orders.csv")).unwrap();
        let y = std::fs::read(c.0.join("orders.csv")).unwrap();
        assert!(x != y, "a different seed should give different data");
    }

    #[test]
    fn headers_counts_and_referential_integrity() {
        let d = generate_data(1_500, 11);
        let s = d.summary;
        assert_eq!(d.customers.headers.join(","), H_CUSTOMERS.trim_end());
        assert_eq!(d.products.headers.join(","), H_PRODUCTS.trim_end());
        assert_eq!(d.orders.headers.join(","), H_ORDERS.trim_end());
        assert_eq!(d.items.headers.join(","), H_ITEMS.trim_end());
        assert_eq!(d.sessions.headers.join(","), H_SESSIONS.trim_end());
        assert_eq!(d.events.headers.join(","), H_EVENTS.trim_end());
        assert_eq!(d.truth.headers.join(","), H_TRUTH.trim_end());
        assert_eq!(s.customers, d.customers.rows.len() as u64);
        assert_eq!(s.customers, d.truth.rows.len() as u64);
        assert_eq!(s.products, d.products.rows.len() as u64);
        assert_eq!(s.orders, d.orders.rows.len() as u64);
        assert_eq!(s.order_items, d.items.rows.len() as u64);
        assert_eq!(s.sessions, d.sessions.rows.len() as u64);
        assert_eq!(s.events, d.events.rows.len() as u64);
        assert!(s.orders > 0 && s.events > s.sessions && s.order_items >= s.orders);

        // products
        let mut prices = HashMap::new();
        let mut cats = HashSet::new();
        for r in &d.products.rows {
            assert!(r[0].starts_with('P') && r[0].len() == 4, "{}", r[0]);
            assert!(CATEGORIES.contains(&r[1].as_str()));
            cats.insert(r[1].clone());
            let p = paise(&r[3]);
            assert!((24_900..=149_900).contains(&p));
            assert!(r[4] == "true" || r[4] == "false");
            assert!(
                prices.insert(r[0].clone(), p).is_none(),
                "duplicate product"
            );
        }
        assert_eq!(cats.len(), CATEGORIES.len());
        assert!(d.products.rows.iter().any(|r| r[4] == "false"));

        // customers
        let mut created = HashMap::new();
        let mut prev = String::new();
        let mut phones = HashSet::new();
        for r in &d.customers.rows {
            assert!(r[0].starts_with('C') && r[0].len() == 8, "{}", r[0]);
            if !r[1].is_empty() {
                assert!(r[1].ends_with("@example.com"));
                assert!(r[1].contains(&format!(".{}@", r[0].to_lowercase())));
            } else {
                assert_eq!(r[6], "false", "no email, no email consent");
            }
            if !r[2].is_empty() {
                assert!(r[2].starts_with('+') && r[2][1..].bytes().all(|b| b.is_ascii_digit()));
                assert!(phones.insert(r[2].clone()), "duplicate phone {}", r[2]);
            } else {
                assert_eq!((r[7].as_str(), r[8].as_str()), ("false", "false"));
            }
            let tz = COUNTRIES
                .iter()
                .find(|c| c.code == r[4])
                .expect("known country");
            assert_eq!(tz.tz, r[5]);
            assert!(r[9].len() == 20 && r[9].ends_with('Z') && r[9].as_str() < END);
            assert!(r[9] >= prev, "created_at grows with the customer id");
            prev = r[9].clone();
            assert!(created.insert(r[0].clone(), r[9].clone()).is_none());
        }

        // orders and items
        let mut order_customer = HashMap::new();
        let mut order_amounts = HashMap::new();
        let (oc, ot, ota, ocur, ost, odis) = (
            d.orders.col("customer_id"),
            d.orders.col("ordered_at"),
            d.orders.col("total_amount"),
            d.orders.col("currency"),
            d.orders.col("status"),
            d.orders.col("discount_amount"),
        );
        for r in &d.orders.rows {
            assert!(r[0].starts_with('O'));
            let c = created.get(&r[oc]).expect("order customer exists");
            assert!(r[ot] >= *c && r[ot].as_str() < END);
            assert_eq!(r[ocur], "INR");
            assert!(["completed", "cancelled", "refunded"].contains(&r[ost].as_str()));
            assert!(
                order_customer.insert(r[0].clone(), r[oc].clone()).is_none(),
                "dup order id"
            );
            order_amounts.insert(r[0].clone(), (paise(&r[ota]), paise(&r[odis]), 0i64));
        }
        let mut lines = HashSet::new();
        for r in &d.items.rows {
            let amounts = order_amounts.get_mut(&r[0]).expect("item's order exists");
            let price = prices.get(&r[1]).expect("item's product exists");
            let q: i64 = r[2].parse().unwrap();
            assert!(q >= 1);
            assert_eq!(paise(&r[3]), *price);
            amounts.2 += q * price;
            assert!(
                lines.insert((r[0].clone(), r[1].clone())),
                "duplicate order line"
            );
        }
        for (id, (total, discount, subtotal)) in &order_amounts {
            assert!(*subtotal > 0, "order {id} has no items");
            assert_eq!(*total, subtotal - discount, "order {id} total");
            assert!(*discount == 0 || (*discount * 100 >= subtotal * 10 - 100));
        }

        // customer attributes: the tier follows completed spend; every channel occurs
        let mut spend: HashMap<&str, u64> = HashMap::new();
        for r in d.orders.rows.iter().filter(|r| r[ost] == "completed") {
            *spend.entry(r[oc].as_str()).or_default() += paise(&r[ota]) as u64;
        }
        let (ctier, cchan) = (
            d.customers.col("loyalty_tier"),
            d.customers.col("acquisition_channel"),
        );
        let mut tiers: HashMap<&str, u64> = HashMap::new();
        let mut channels: HashMap<&str, u64> = HashMap::new();
        for r in &d.customers.rows {
            let s = spend.get(r[0].as_str()).copied().unwrap_or(0);
            let tier = if s >= LOYALTY_GOLD_PAISE {
                "gold"
            } else if s >= LOYALTY_SILVER_PAISE {
                "silver"
            } else {
                "bronze"
            };
            assert_eq!(r[ctier], tier, "{} spent {s} paise", r[0]);
            *tiers.entry(r[ctier].as_str()).or_default() += 1;
            *channels.entry(r[cchan].as_str()).or_default() += 1;
        }
        assert_eq!(tiers.len(), LOYALTY_TIERS.len(), "{tiers:?}");
        for (name, weight) in ACQUISITION_CHANNELS {
            let share = channels.get(name).copied().unwrap_or(0) as f64 / s.customers as f64;
            assert!(
                (share - weight as f64 / 100.0).abs() < 0.05,
                "{name}: {share}"
            );
        }
        assert_eq!(channels.len(), ACQUISITION_CHANNELS.len());

        // sessions and events
        let mut session_of = HashMap::new();
        for r in &d.sessions.rows {
            let c = created.get(&r[1]).expect("session customer exists");
            assert!(
                r[2] >= *c && r[2].as_str() < END,
                "session time {} {}",
                r[2],
                c
            );
            assert!(SOURCES.contains(&r[3].as_str()) && DEVICES.contains(&r[4].as_str()));
            assert!(
                session_of
                    .insert(r[0].clone(), (r[1].clone(), r[2].clone()))
                    .is_none()
            );
        }
        let mut event_ids = HashSet::new();
        for r in &d.events.rows {
            assert!(event_ids.insert(r[0].clone()), "duplicate event id");
            assert!(created.contains_key(&r[1]), "event customer exists");
            assert!(EVENT_TYPES.contains(&r[2].as_str()));
            assert!(r[3].as_str() < END);
            assert_eq!(r[4].is_empty(), r[2] == "search");
            if !r[4].is_empty() {
                assert!(prices.contains_key(&r[4]), "event product exists");
            }
            let (sc, st) = session_of.get(&r[5]).expect("event session exists");
            assert_eq!(*sc, r[1]);
            assert!(r[3] >= *st);
        }

        // ground truth agrees with the files
        let mut n_orders: HashMap<&str, u64> = HashMap::new();
        let mut last_order: HashMap<&str, &str> = HashMap::new();
        for r in &d.orders.rows {
            *n_orders.entry(r[oc].as_str()).or_default() += 1;
            let e = last_order.entry(r[oc].as_str()).or_insert(r[ot].as_str());
            if r[ot].as_str() > *e {
                *e = r[ot].as_str();
            }
        }
        let t = &d.truth;
        let (talive, tdrop, tbot, tord, tnext, tp) = (
            t.col("alive_at_end"),
            t.col("dropout_at"),
            t.col("is_bot"),
            t.col("orders"),
            t.col("next_order_at"),
            t.col("true_p_return_90d"),
        );
        for r in &t.rows {
            let n = n_orders.get(r[0].as_str()).copied().unwrap_or(0);
            assert_eq!(r[tord].parse::<u64>().unwrap(), n);
            if r[tbot] == "true" {
                assert!(n <= 1, "bots buy at most once");
            } else {
                assert!(n >= 1, "every human customer has a first order");
            }
            if r[talive] == "false" {
                assert!(r[tnext].is_empty());
                assert_eq!(r[tp].parse::<f64>().unwrap(), 0.0);
                if !r[tdrop].is_empty() {
                    // no orders after dropout
                    assert_eq!(last_order[r[0].as_str()], r[tdrop]);
                }
            } else {
                assert!(r[tdrop].is_empty());
                assert!(r[tnext].is_empty() || r[tnext].as_str() >= END);
            }
        }
    }

    #[test]
    fn planted_structure_is_visible() {
        let d = generate_data(2_000, 3);
        let t = &d.truth;
        let n = t.rows.len() as f64;
        let (talive, tbot, tord, tnext, tp, tsens) = (
            t.col("alive_at_end"),
            t.col("is_bot"),
            t.col("orders"),
            t.col("next_order_at"),
            t.col("true_p_return_90d"),
            t.col("discount_sensitivity"),
        );
        // Heterogeneity: a mean of several orders, yet a third of customers buy at most twice.
        let orders: Vec<u64> = t.rows.iter().map(|r| r[tord].parse().unwrap()).collect();
        let mean = orders.iter().sum::<u64>() as f64 / n;
        assert!((2.5..9.0).contains(&mean), "mean orders {mean}");
        let few = orders.iter().filter(|&&o| o <= 2).count() as f64 / n;
        assert!(few > 0.3, "share with <= 2 orders {few}");
        assert!(orders.iter().any(|&o| o >= 15));

        // Alive share: BG/NBD dropout leaves roughly a third alive at the end.
        let alive: Vec<bool> = t.rows.iter().map(|r| r[talive] == "true").collect();
        let alive_share = alive.iter().filter(|&&a| a).count() as f64 / n;
        assert!(
            (0.2..0.55).contains(&alive_share),
            "alive share {alive_share}"
        );

        // Dead customers never come back; most alive ones do within a year.
        let next_share = |want: bool| {
            let g: Vec<_> = t
                .rows
                .iter()
                .filter(|r| (r[talive] == "true") == want)
                .collect();
            g.iter().filter(|r| !r[tnext].is_empty()).count() as f64 / g.len() as f64
        };
        assert_eq!(next_share(false), 0.0);
        assert!(next_share(true) > 0.8);

        // true_p_return_90d is calibrated against the simulated future.
        let expected: f64 = t.rows.iter().map(|r| r[tp].parse::<f64>().unwrap()).sum();
        let window_end = "2025-08-30T00:00:00Z";
        let realized = t
            .rows
            .iter()
            .filter(|r| !r[tnext].is_empty() && r[tnext].as_str() < window_end)
            .count() as f64;
        let sd = expected.sqrt().max(1.0);
        assert!(
            (realized - expected).abs() < 4.0 * sd,
            "realized {realized} vs {expected}"
        );

        // Leak of the imminent next order: browsing in the last week before `end`.
        let mut recent: HashSet<&str> = HashSet::new();
        for r in &d.events.rows {
            if r[3].as_str() >= "2025-05-25T00:00:00Z" {
                recent.insert(r[1].as_str());
            }
        }
        let share = |f: &dyn Fn(&Vec<String>) -> bool| {
            let g: Vec<_> = t
                .rows
                .iter()
                .filter(|r| r[tbot] == "false" && f(r))
                .collect();
            g.iter().filter(|r| recent.contains(r[0].as_str())).count() as f64 / g.len() as f64
        };
        let imminent = share(&|r| !r[tnext].is_empty() && r[tnext].as_str() < "2025-06-08");
        let dead = share(&|r| r[talive] == "false");
        assert!(
            imminent > 0.25 && imminent > 10.0 * dead,
            "imminent {imminent} dead {dead}"
        );

        // Festival seasonality: more orders per day in the Diwali season.
        let ot = d.orders.col("ordered_at");
        let (mut diwali, mut other) = (0.0, 0.0);
        for r in &d.orders.rows {
            let md = &r[ot][5..10];
            if ("10-15".."11-15").contains(&md) {
                diwali += 1.0
            } else {
                other += 1.0
            }
        }
        let ratio = (diwali / 31.0) / (other / (365.0 - 31.0));
        assert!(ratio > 1.15, "diwali ratio {ratio}");

        // Discount sensitivity: sensitive customers get discounts far more often.
        let sens: HashMap<&str, f64> = t
            .rows
            .iter()
            .map(|r| (r[0].as_str(), r[tsens].parse().unwrap()))
            .collect();
        let (oc, odis) = (d.orders.col("customer_id"), d.orders.col("discount_amount"));
        let (mut hi, mut hi_d, mut lo, mut lo_d) = (0.0, 0.0, 0.0, 0.0);
        for r in &d.orders.rows {
            let discounted = if paise(&r[odis]) > 0 { 1.0 } else { 0.0 };
            if sens[r[oc].as_str()] > 0.5 {
                hi += 1.0;
                hi_d += discounted;
            } else if sens[r[oc].as_str()] < 0.2 {
                lo += 1.0;
                lo_d += discounted;
            }
        }
        assert!(
            hi_d / hi > 2.0 * lo_d / lo,
            "discount share {} vs {}",
            hi_d / hi,
            lo_d / lo
        );

        // Category repetition and cross-sell between consecutive orders of a customer.
        let cat_of: HashMap<&str, &str> = d
            .products
            .rows
            .iter()
            .map(|r| (r[0].as_str(), r[1].as_str()))
            .collect();
        let mut first_cat: HashMap<&str, &str> = HashMap::new();
        for r in &d.items.rows {
            first_cat
                .entry(r[0].as_str())
                .or_insert(cat_of[r[1].as_str()]);
        }
        let (mut pairs, mut repeats, mut hair, mut hair_to_oils, mut oils) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut prev: Option<(&str, &str)> = None;
        for r in &d.orders.rows {
            let cat = first_cat[r[0].as_str()];
            if cat == "oils" {
                oils += 1.0;
            }
            if let Some((pc, pcat)) = prev
                && pc == r[oc]
            {
                pairs += 1.0;
                if pcat == cat {
                    repeats += 1.0;
                }
                if pcat == "hair care" {
                    hair += 1.0;
                    if cat == "oils" {
                        hair_to_oils += 1.0;
                    }
                }
            }
            prev = Some((r[oc].as_str(), cat));
        }
        let n_orders = d.orders.rows.len() as f64;
        assert!(repeats / pairs > 0.45, "repeat share {}", repeats / pairs);
        assert!(
            hair_to_oils / hair > 1.5 * oils / n_orders,
            "cross-sell hair care -> oils"
        );

        // Noise: duplicate events, bots, missing contact data.
        let mut seen = HashSet::new();
        let mut dups = 0;
        for r in &d.events.rows {
            if !seen.insert((&r[1], &r[2], &r[3], &r[4], &r[5])) {
                dups += 1;
            }
        }
        let dup_share = dups as f64 / d.events.rows.len() as f64;
        assert!(
            (0.004..0.03).contains(&dup_share),
            "duplicate share {dup_share}"
        );
        let no_email = d.customers.rows.iter().filter(|r| r[1].is_empty()).count() as f64 / n;
        assert!((0.1..0.2).contains(&no_email), "no email {no_email}");
        let india = d.customers.rows.iter().filter(|r| r[4] == "IN").count() as f64 / n;
        assert!((0.8..0.9).contains(&india), "india {india}");
    }

    #[test]
    fn bots_browse_in_bursts() {
        // Bots are 0.2% of customers: generate enough to see some.
        let dir = TempDir::new("bots");
        generate(&params(4_000, 5), &dir.0, &|_| {}).unwrap();
        let truth = Table::read(&dir.0, "ground_truth.csv");
        let bots: HashSet<String> = truth
            .rows
            .iter()
            .filter(|r| r[7] == "true")
            .map(|r| r[0].clone())
            .collect();
        assert!(!bots.is_empty());
        let events = Table::read(&dir.0, "events.csv");
        let mut views: HashMap<&str, u64> = HashMap::new();
        for r in &events.rows {
            if r[2] == "view" {
                *views.entry(r[1].as_str()).or_default() += 1;
            }
        }
        for b in &bots {
            assert!(
                views.get(b.as_str()).copied().unwrap_or(0) >= 100,
                "bot {b} views"
            );
        }
    }

    #[test]
    fn zero_customers_and_bad_years() {
        let dir = TempDir::new("empty");
        let s = generate(&params(0, 1), &dir.0, &|_| {}).unwrap();
        assert_eq!((s.customers, s.orders, s.events), (0, 0, 0));
        assert!(s.products >= 80);
        let orders = std::fs::read_to_string(dir.0.join("orders.csv")).unwrap();
        assert_eq!(orders, H_ORDERS);
        let mut p = params(10, 1);
        p.years = 0;
        assert!(generate(&p, &dir.0, &|_| {}).is_err());
    }

    #[test]
    fn text_and_numbers_format() {
        let mut b = Vec::new();
        push_text(&mut b, "a,b \"c\"");
        assert_eq!(b, b"\"a,b \"\"c\"\"\"");
        b.clear();
        push_text(&mut b, "women's wellness");
        assert_eq!(b, b"women's wellness");
        b.clear();
        push_money(&mut b, 123_405);
        assert_eq!(b, b"1234.05");
        b.clear();
        push_padded(&mut b, 42, 7);
        assert_eq!(b, b"0000042");
        let ctx = Ctx::new(&params(1, 1)).unwrap();
        b.clear();
        ctx.push_ts(&mut b, ctx.end - 1);
        assert_eq!(b, b"2025-05-31T23:59:59Z");
        b.clear();
        ctx.push_ts(&mut b, ctx.end + 400 * 86_400 * 3);
        assert_eq!(String::from_utf8(b).unwrap().len(), 20);
        // the warped clock is invertible
        for t in [0.0, 100.5, 500.25, 1100.0, 2000.0] {
            let w = ctx.warp(t, 1.2);
            assert!((ctx.unwarp(w, 1.2) - t).abs() < 1e-6);
        }
    }
}
