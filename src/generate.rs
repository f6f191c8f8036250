// TEMPORARY placeholder until the generator lands (overwritten by the real module).
pub struct GenerateParams { pub customers: u64, pub seed: u64, pub end: chrono::NaiveDate, pub years: u32, pub message_effect: f64 }
impl GenerateParams { pub fn new(customers: u64, seed: u64, end: chrono::NaiveDate) -> Self { Self { customers, seed, end, years: 3, message_effect: 0.0 } } }
pub struct GenerateSummary { pub customers: u64, pub products: u64, pub orders: u64, pub order_items: u64, pub sessions: u64, pub events: u64 }
pub fn generate(_p: &GenerateParams, _o: &std::path::Path, _f: &dyn Fn(u64)) -> anyhow::Result<GenerateSummary> { anyhow::bail!("not yet") }
pub const CATEGORIES: &[&str] = &[];
