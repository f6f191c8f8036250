//! The keys already seen in one file, for duplicate detection: 16 bytes a slot.
//!
//! A `HashMap<u64, (u64, u64)>` took 25 bytes a slot at up to twice the rows, and three times
//! that while it grew: 2.6 GB for the 55 M events of a 1 M-customer brand. This is an open
//! addressing table (linear probing) over 64-bit key hashes holding what duplicate detection
//! needs of a row's first occurrence (a 32-bit content digest and the line), sized once from
//! the file's length when the parser knows its average row length, so the big table is
//! allocated once instead of grown by doubling. A lookup and the insert after it touch the
//! same one or two cache lines.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Fullest the table gets before it grows.
const MAX_LOAD_PERCENT: usize = 85;

/// What is kept of a row's first occurrence: a 32-bit digest of its values and its line
/// (saturated at `u32::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct First {
    pub content: u32,
    pub line: u32,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// 0 marks an empty slot (a key hash of 0 is stored as 1).
    key: u64,
    /// `content << 32 | line`.
    first: u64,
}

#[derive(Default)]
pub struct KeySet {
    slots: Vec<Slot>,
    len: usize,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn stored(key: u64) -> u64 {
        key.max(1)
    }

    /// The home slot: keys are uniform, so scaling beats masking and allows any table size.
    fn home(&self, key: u64) -> usize {
        ((u128::from(key) * self.slots.len() as u128) >> 64) as usize
    }

    pub fn get(&self, key: u64) -> Option<First> {
        if self.slots.is_empty() {
            return None;
        }
        let key = Self::stored(key);
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.key == key {
                return Some(unpack(s.first));
            }
            if s.key == 0 {
                return None;
            }
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
    }

    /// Asks the CPU to start loading `key`'s home slot, so that a [`Self::get`] a few rows
    /// later finds it in cache: at 1 M customers the events table is ~1 GB, and the load of
    /// a random slot (a cache and TLB miss) dominates the parser's profile.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if self.slots.is_empty() {
            return;
        }
        prefetch_read(&self.slots[self.home(Self::stored(key))]);
    }

    /// Adds `key`, which must not be present.
    pub fn insert(&mut self, key: u64, first: First) {
        debug_assert!(self.get(key).is_none());
        if (self.len + 1) * 100 > self.slots.len() * MAX_LOAD_PERCENT {
            // Double while small; past that grow by half, bounding the moment both tables exist.
            let grown = if self.slots.len() < 1 << 22 {
                self.len * 2
            } else {
                self.len + self.len / 2
            };
            self.reserve(grown.max(1024));
        }
        self.put(Self::stored(key), pack(first));
        self.len += 1;
    }

    fn put(&mut self, key: u64, first: u64) {
        let mut i = self.home(key);
        while self.slots[i].key != 0 {
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
        self.slots[i] = Slot { key, first };
    }

    /// Makes room for `total` keys in all (a hint: the table still grows past it).
    pub fn reserve(&mut self, total: usize) {
        let want = total.saturating_mul(100) / MAX_LOAD_PERCENT + 1;
        if want <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); want]);
        for s in old.into_iter().filter(|s| s.key != 0) {
            self.put(s.key, s.first);
        }
    }
}

/// Duplicate detection over one file: a [`KeySet`], skipped while the file is sorted by key.
///
/// Exports are usually written in key order (the 1 M-customer brand's customers, orders,
/// sessions and events all are). While each key is no smaller than the one before, a repeat
/// can only be of the previous key, so checking is one comparison and no random access into
/// a table that at 1 M customers is ~1 GB (its page walks were most of the parser's time on
/// PostgreSQL, and grew faster than the rows). The first occurrences are still appended to a
/// list, a sequential write. If a key ever comes out of order, the list is sorted in place
/// into a [`SortedKeys`] that answers for every key before that row, and the table takes only
/// the keys after it. Building the whole table from the list held both: importing a 1 M-customer
/// brand whose 55 M events go out of order at the last row peaked at 2,002 MiB that way, and
/// at 1,030 MiB this way (95.5 s instead of 111.4 s).
pub struct Dedup {
    sorted: bool,
    /// First occurrences in file order, while sorted.
    firsts: Vec<Slot>,
    /// The listed keys, once out of order.
    listed: SortedKeys,
    /// Keys first seen after the order broke.
    set: KeySet,
    /// Rows the file is expected to hold, for sizing the table.
    expected: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Self {
            sorted: true,
            firsts: Vec::new(),
            listed: SortedKeys::default(),
            set: KeySet::new(),
            expected: 0,
        }
    }
}

impl Dedup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the keys so far came in order: the caller then passes how each compares.
    pub fn sorted(&self) -> bool {
        self.sorted
    }

    /// The file's expected row count (a hint).
    pub fn expect(&mut self, rows: usize) {
        self.expected = rows;
        if self.sorted {
            // Capacity only: pages are not touched until rows are listed.
            self.firsts.reserve(rows.saturating_sub(self.firsts.len()));
        } else {
            self.set.reserve(rows.saturating_sub(self.listed.len()));
        }
    }

    pub fn prefetch(&self, key: u64) {
        if !self.sorted {
            self.set.prefetch(key);
            self.listed.prefetch(key);
        }
    }

    /// The first occurrence of `key`. `order` is how the row's key compares with the previous
    /// checked row's key (`None`: not known, or not comparable), needed only while sorted.
    pub fn get(&mut self, key: u64, order: Option<std::cmp::Ordering>) -> Option<First> {
        use std::cmp::Ordering::*;
        if self.sorted {
            match order {
                Some(Greater) => return None,
                // The previous key's first occurrence is the last one listed.
                Some(Equal) => {
                    return self
                        .firsts
                        .last()
                        .filter(|s| s.key == KeySet::stored(key))
                        .map(|s| unpack(s.first));
                }
                Some(Less) | None => self.unsort(),
            }
        }
        self.set.get(key).or_else(|| self.listed.get(key))
    }

    /// Adds `key`, which [`Self::get`] just reported absent.
    pub fn insert(&mut self, key: u64, first: First) {
        if self.sorted {
            self.firsts.push(Slot {
                key: KeySet::stored(key),
                first: pack(first),
            });
        } else {
            self.set.insert(key, first);
        }
    }

    /// Out of order: from here on, the listed keys sorted, and the table for new ones.
    fn unsort(&mut self) {
        self.sorted = false;
        self.listed = SortedKeys::from_list(std::mem::take(&mut self.firsts));
        self.set
            .reserve(self.expected.saturating_sub(self.listed.len()));
    }
}

fn pack(first: First) -> u64 {
    (u64::from(first.content) << 32) | u64::from(first.line)
}

fn unpack(first: u64) -> First {
    First {
        content: (first >> 32) as u32,
        line: first as u32,
    }
}

/// Keys sorted by hash, found by binary search within a bucket of about
/// [`SORTED_BUCKET`] keys. The buckets are ranges of the (uniform) hash, so a key's bucket
/// is computed, and a directory of bucket starts (half a byte per key) replaces a table's
/// empty slots (3 bytes per key at 85 % load).
#[derive(Default)]
struct SortedKeys {
    slots: Vec<Slot>,
    /// Bucket `b` is `slots[starts[b]..starts[b + 1]]`.
    starts: Vec<usize>,
}

/// Keys per bucket, on average.
const SORTED_BUCKET: usize = 16;

impl SortedKeys {
    /// Sorts `list` in place (its memory becomes this), keeping the earliest line of a key
    /// listed twice (a 64-bit hash collision, which the table too treats as a repeat).
    fn from_list(mut slots: Vec<Slot>) -> Self {
        slots.sort_unstable_by_key(|s| (s.key, s.first as u32));
        slots.dedup_by_key(|s| s.key);
        let buckets = slots.len() / SORTED_BUCKET + 1;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut b = 0;
        starts.push(0);
        for (i, s) in slots.iter().enumerate() {
            let home = Self::bucket(s.key, buckets);
            while b < home {
                starts.push(i);
                b += 1;
            }
        }
        starts.resize(buckets + 1, slots.len());
        Self { slots, starts }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn bucket(key: u64, buckets: usize) -> usize {
        ((u128::from(key) * buckets as u128) >> 64) as usize
    }

    /// The bucket of a stored key (None while the list is empty: no directory yet).
    fn bucket_of(&self, key: u64) -> Option<usize> {
        let buckets = self.starts.len().checked_sub(1).filter(|&b| b > 0)?;
        Some(Self::bucket(key, buckets))
    }

    fn get(&self, key: u64) -> Option<First> {
        let key = KeySet::stored(key);
        let b = self.bucket_of(key)?;
        let bucket = &self.slots[self.starts[b]..self.starts[b + 1]];
        bucket
            .binary_search_by_key(&key, |s| s.key)
            .ok()
            .map(|i| unpack(bucket[i].first))
    }

    #[inline]
    fn prefetch(&self, key: u64) {
        if let Some(b) = self.bucket_of(KeySet::stored(key)) {
            prefetch_read(&self.starts[b]);
        }
    }
}

/// Asks the CPU to start loading the cache line of `value`.
#[inline]
fn prefetch_read<T>(value: &T) {
    let p: *const T = value;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, and the pointer comes from a reference.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hashes a `u64` that is already a uniform hash as itself.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of id hashes.
pub type HashIds = HashSet<u64, BuildHasherDefault<Identity>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(i: u64) -> u64 {
        // splitmix64: distinct, uniform keys.
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn finds_what_was_inserted_while_growing() {
        let mut s = KeySet::new();
        let n = 300_000u64;
        for i in 0..n {
            if i == 1000 {
                s.reserve(50_000); // a low estimate: the table grows past it
            }
            let k = mix(i);
            assert!(s.get(k).is_none());
            s.insert(
                k,
                First {
                    content: i as u32 ^ 0xabcd,
                    line: i as u32 + 2,
                },
            );
        }
        assert_eq!(s.len(), n as usize);
        for i in (0..n).step_by(7).chain([0, n - 1]) {
            assert_eq!(
                s.get(mix(i)),
                Some(First {
                    content: i as u32 ^ 0xabcd,
                    line: i as u32 + 2
                })
            );
        }
        for i in n..n + 10_000 {
            assert_eq!(s.get(mix(i)), None);
        }
        // Extreme keys: the last slot wraps around; 0 is stored as 1.
        s.insert(
            u64::MAX,
            First {
                content: 2,
                line: 2,
            },
        );
        s.insert(
            0,
            First {
                content: 1,
                line: 1,
            },
        );
        assert_eq!(
            s.get(0),
            Some(First {
                content: 1,
                line: 1
            })
        );
        assert_eq!(
            s.get(u64::MAX),
            Some(First {
                content: 2,
                line: 2
            })
        );
        assert!(s.len * 100 <= s.slots.len() * MAX_LOAD_PERCENT);
    }

    /// Sorted input checks by comparison; a key out of order switches to the table, which
    /// then knows every key seen before it.
    #[test]
    fn dedup_finds_repeats_sorted_and_after_the_order_breaks() {
        use std::cmp::Ordering::*;
        let f = |line: u32| First {
            content: line * 10,
            line,
        };
        let mut d = Dedup::new();
        d.expect(100);
        for k in [1u64, 2, 3] {
            assert_eq!(d.get(mix(k), Some(Greater)), None);
            d.insert(mix(k), f(k as u32));
        }
        assert!(d.sorted());
        assert_eq!(
            d.get(mix(3), Some(Equal)),
            Some(f(3)),
            "a repeat of the previous key"
        );
        assert!(
            d.sorted() && d.set.slots.is_empty(),
            "no table while sorted"
        );
        // Key 2 again, after 3: out of order; the table must know 1, 2 and 3.
        assert_eq!(d.get(mix(2), Some(Less)), Some(f(2)));
        assert!(!d.sorted());
        assert_eq!(d.get(mix(1), None), Some(f(1)));
        assert_eq!(
            d.get(mix(4), Some(Greater)),
            None,
            "the order no longer matters"
        );
        d.insert(mix(4), f(4));
        assert_eq!(d.get(mix(4), None), Some(f(4)));
        assert_eq!(
            d.get(mix(3), Some(Greater)),
            Some(f(3)),
            "a repeat found though its key compares greater"
        );
        assert_eq!(
            d.set.len(),
            1,
            "the table holds only the key first seen after the break"
        );
    }

    /// A long sorted stretch that breaks late: every listed key is still found (by the
    /// sorted list, not copied into a table), new keys go to the table, and absent keys are
    /// reported absent, including the extremes of the hash range.
    #[test]
    fn a_late_break_keeps_the_listed_keys_out_of_the_table() {
        use std::cmp::Ordering::*;
        let f = |i: u64| First {
            content: (i as u32).wrapping_mul(7),
            line: i as u32 + 2,
        };
        let (listed, after) = (200_000u64, 5_000u64);
        let mut d = Dedup::new();
        d.expect((listed + after) as usize);
        // Keys 0 and u64::MAX (stored as 1 and u64::MAX) are listed too.
        let key = |i: u64| match i {
            0 => 0,
            1 => u64::MAX,
            _ => mix(i),
        };
        for i in 0..listed {
            assert_eq!(d.get(key(i), Some(Greater)), None);
            d.insert(key(i), f(i));
        }
        assert_eq!(d.get(key(listed - 1), Some(Equal)), Some(f(listed - 1)));
        // The order breaks with a new key; then new keys, and repeats of old and new ones.
        assert_eq!(d.get(key(listed), Some(Less)), None);
        assert!(!d.sorted());
        d.insert(key(listed), f(listed));
        for i in listed + 1..listed + after {
            d.prefetch(key(i));
            assert_eq!(d.get(key(i), None), None, "key {i} is new");
            d.insert(key(i), f(i));
        }
        assert_eq!(
            d.set.len(),
            after as usize,
            "only keys after the break are in the table"
        );
        assert_eq!(d.listed.len(), listed as usize);
        for i in
            (0..listed + after)
                .step_by(3)
                .chain([0, 1, listed - 1, listed, listed + after - 1])
        {
            d.prefetch(key(i));
            assert_eq!(d.get(key(i), None), Some(f(i)), "key {i} was seen");
        }
        for i in listed + after..listed + after + 20_000 {
            assert_eq!(d.get(key(i), Some(Greater)), None, "key {i} was never seen");
        }
        // A 64-bit collision in the list keeps the earliest line.
        let sk = SortedKeys::from_list(vec![
            Slot {
                key: 5,
                first: pack(First {
                    content: 1,
                    line: 9,
                }),
            },
            Slot {
                key: 5,
                first: pack(First {
                    content: 2,
                    line: 3,
                }),
            },
            Slot {
                key: 4,
                first: pack(First {
                    content: 3,
                    line: 4,
                }),
            },
        ]);
        assert_eq!(sk.len(), 2);
        assert_eq!(
            sk.get(5),
            Some(First {
                content: 2,
                line: 3
            })
        );
        assert_eq!(sk.get(4).map(|f| f.line), Some(4));
        assert_eq!(sk.get(6), None);
        assert_eq!(SortedKeys::default().get(6), None, "an empty list answers");
    }

    #[test]
    fn a_full_last_slot_wraps_to_the_front() {
        let mut s = KeySet::new();
        s.reserve(10);
        for k in (0..8).map(|i| u64::MAX - i) {
            s.insert(
                k,
                First {
                    content: 0,
                    line: k as u32,
                },
            );
        }
        for k in (0..8).map(|i| u64::MAX - i) {
            assert_eq!(s.get(k).map(|f| f.line), Some(k as u32));
        }
    }
}
