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
                return Some(First { content: (s.first >> 32) as u32, line: s.first as u32 });
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
        let slot: *const Slot = &self.slots[self.home(Self::stored(key))];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never faults, and the pointer is in bounds anyway.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Adds `key`, which must not be present.
    pub fn insert(&mut self, key: u64, first: First) {
        debug_assert!(self.get(key).is_none());
        if (self.len + 1) * 100 > self.slots.len() * MAX_LOAD_PERCENT {
            // Double while small; past that grow by half, bounding the moment both tables exist.
            let grown = if self.slots.len() < 1 << 22 { self.len * 2 } else { self.len + self.len / 2 };
            self.reserve(grown.max(1024));
        }
        self.put(Self::stored(key), (u64::from(first.content) << 32) | u64::from(first.line));
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
/// list, a sequential write, so that if a key ever comes out of order the table is built from
/// them at that row and checking goes on exactly as if it had been used from the start.
pub struct Dedup {
    sorted: bool,
    /// First occurrences in file order, while sorted.
    firsts: Vec<(u64, First)>,
    set: KeySet,
    /// Rows the file is expected to hold, for sizing the table.
    expected: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Self { sorted: true, firsts: Vec::new(), set: KeySet::new(), expected: 0 }
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
            self.firsts.reserve(rows.saturating_sub(self.firsts.len()));
        } else {
            self.set.reserve(rows);
        }
    }

    pub fn prefetch(&self, key: u64) {
        if !self.sorted {
            self.set.prefetch(key);
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
                Some(Equal) => return self.firsts.last().filter(|f| f.0 == key).map(|f| f.1),
                Some(Less) | None => self.unsort(),
            }
        }
        self.set.get(key)
    }

    /// Adds `key`, which [`Self::get`] just reported absent.
    pub fn insert(&mut self, key: u64, first: First) {
        if self.sorted {
            self.firsts.push((key, first));
        } else {
            self.set.insert(key, first);
        }
    }

    /// Out of order: from here on, the table.
    fn unsort(&mut self) {
        self.sorted = false;
        let firsts = std::mem::take(&mut self.firsts);
        self.set.reserve(self.expected.max(firsts.len()));
        for (key, first) in firsts {
            // Distinct keys (a repeat was never listed twice), up to a 64-bit hash collision,
            // which the table would then treat as a repeat, as it always has.
            if self.set.get(key).is_none() {
                self.set.insert(key, first);
            }
        }
    }
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
            s.insert(k, First { content: i as u32 ^ 0xabcd, line: i as u32 + 2 });
        }
        assert_eq!(s.len(), n as usize);
        for i in (0..n).step_by(7).chain([0, n - 1]) {
            assert_eq!(s.get(mix(i)), Some(First { content: i as u32 ^ 0xabcd, line: i as u32 + 2 }));
        }
        for i in n..n + 10_000 {
            assert_eq!(s.get(mix(i)), None);
        }
        // Extreme keys: the last slot wraps around; 0 is stored as 1.
        s.insert(u64::MAX, First { content: 2, line: 2 });
        s.insert(0, First { content: 1, line: 1 });
        assert_eq!(s.get(0), Some(First { content: 1, line: 1 }));
        assert_eq!(s.get(u64::MAX), Some(First { content: 2, line: 2 }));
        assert!(s.len * 100 <= s.slots.len() * MAX_LOAD_PERCENT);
    }

    /// Sorted input checks by comparison; a key out of order switches to the table, which
    /// then knows every key seen before it.
    #[test]
    fn dedup_finds_repeats_sorted_and_after_the_order_breaks() {
        use std::cmp::Ordering::*;
        let f = |line: u32| First { content: line * 10, line };
        let mut d = Dedup::new();
        d.expect(100);
        for k in [1u64, 2, 3] {
            assert_eq!(d.get(mix(k), Some(Greater)), None);
            d.insert(mix(k), f(k as u32));
        }
        assert!(d.sorted());
        assert_eq!(d.get(mix(3), Some(Equal)), Some(f(3)), "a repeat of the previous key");
        assert!(d.sorted() && d.set.slots.is_empty(), "no table while sorted");
        // Key 2 again, after 3: out of order; the table must know 1, 2 and 3.
        assert_eq!(d.get(mix(2), Some(Less)), Some(f(2)));
        assert!(!d.sorted());
        assert_eq!(d.get(mix(1), None), Some(f(1)));
        assert_eq!(d.get(mix(4), Some(Greater)), None, "the order no longer matters");
        d.insert(mix(4), f(4));
        assert_eq!(d.get(mix(4), None), Some(f(4)));
        assert_eq!(d.get(mix(3), Some(Greater)), Some(f(3)), "a repeat found though its key compares greater");
    }

    #[test]
    fn a_full_last_slot_wraps_to_the_front() {
        let mut s = KeySet::new();
        s.reserve(10);
        for k in (0..8).map(|i| u64::MAX - i) {
            s.insert(k, First { content: 0, line: k as u32 });
        }
        for k in (0..8).map(|i| u64::MAX - i) {
            assert_eq!(s.get(k).map(|f| f.line), Some(k as u32));
        }
    }
}
