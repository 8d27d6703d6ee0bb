//! Per-client variants of one name, pre-rendered by the writer and picked on the answer path.
//!
//! A name whose answer depends on the client (a global name with a `strategy`) keeps its ordinary
//! sets (the `all` answer: what zone transfers, status and every reader of [`store::sets`] see),
//! followed by a [`MARKER`] set whose body is the variant table:
//!
//! ```text
//! strategy u8 | scoped u8 | locations u16 | locations × variant u16 |
//! variants u16 | variants × (outcome u8, cumulative weight u32, offset u16, len u16) | bodies
//! ```
//!
//! Each body is a complete entry (sets in store layout). The table is picked from by location id
//! (`scoped`: the answer depends on where the client is), by one location for everyone, or by a
//! weighted draw when there are no locations. Picking allocates nothing and takes no lock.

use std::cell::Cell;

/// Set type that ends an entry's ordinary sets; the variant table is its body. Type 65535 is
/// reserved (RFC 6895 section 3.1), so neither a query nor zone data uses it; it differs from
/// [`crate::dns::store::ADDITIONAL`] (type 0), which is an ordinary set that
/// [`crate::dns::store::sets`] shows.
pub const MARKER: u16 = 65535;

const VARIANT_LEN: usize = 9;

/// One variant to encode: the outcome code (for metrics), its weight (weighted strategies) and its
/// sets in store layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantBody<'a> {
    pub outcome: u8,
    pub weight: u32,
    pub sets: &'a [u8],
}

/// Encodes a variant table; `None` when it would not fit a set (64 KiB).
pub fn encode(
    strategy: u8,
    scoped: bool,
    by_location: &[u16],
    variants: &[VariantBody<'_>],
) -> Option<Vec<u8>> {
    let mut out = vec![strategy, u8::from(scoped)];
    out.extend_from_slice(&u16::try_from(by_location.len()).ok()?.to_be_bytes());
    for v in by_location {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&u16::try_from(variants.len()).ok()?.to_be_bytes());
    let mut offset = out.len() + variants.len() * VARIANT_LEN;
    let mut cumulative = 0u32;
    for v in variants {
        cumulative = cumulative.checked_add(v.weight)?;
        out.push(v.outcome);
        out.extend_from_slice(&cumulative.to_be_bytes());
        out.extend_from_slice(&u16::try_from(offset).ok()?.to_be_bytes());
        out.extend_from_slice(&u16::try_from(v.sets.len()).ok()?.to_be_bytes());
        offset += v.sets.len();
    }
    for v in variants {
        out.extend_from_slice(v.sets);
    }
    (out.len() <= u16::MAX as usize).then_some(out)
}

/// The variant table of an entry, if it has one.
#[inline]
pub fn table(entry: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while at + 6 <= entry.len() {
        let rtype = u16::from_be_bytes([entry[at], entry[at + 1]]);
        let len = u16::from_be_bytes([entry[at + 4], entry[at + 5]]) as usize;
        if rtype == MARKER {
            return entry.get(at + 6..at + 6 + len);
        }
        at += 6 + len;
    }
    None
}

/// The variant picked for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked<'a> {
    /// The answer's sets, in store layout.
    pub sets: &'a [u8],
    pub strategy: u8,
    pub outcome: u8,
    /// Whether the answer depended on the client's location.
    pub scoped: bool,
}

#[inline]
fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

#[inline]
fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Picks from a variant `table`: by `location()` (called only when the table is scoped), the one
/// variant for everyone, or by a weighted `draw()` (called only when there are no locations).
#[inline]
pub fn pick<'a>(
    table: &'a [u8],
    location: impl FnOnce() -> u16,
    draw: impl FnOnce() -> u32,
) -> Option<Picked<'a>> {
    let strategy = *table.first()?;
    let scoped = *table.get(1)? != 0;
    let locations = u16_at(table, 2)? as usize;
    let variants_at = 4 + 2 * locations;
    let count = u16_at(table, variants_at)? as usize;
    let entries = variants_at + 2;
    let index = if locations == 0 {
        let total = u32_at(table, entries + (count.checked_sub(1)?) * VARIANT_LEN + 1)?;
        let cumulative =
            (0..count).map(|i| u32_at(table, entries + i * VARIANT_LEN + 1).unwrap_or(total));
        crate::federation::locality::pick_weighted(cumulative, draw())
    } else {
        let id = if scoped { location() as usize } else { 0 };
        // A location the table does not know (never expected) is answered as nowhere.
        let slot = if id < locations { id } else { 0 };
        u16_at(table, 4 + 2 * slot)? as usize
    };
    let at = entries + index.min(count.checked_sub(1)?) * VARIANT_LEN;
    let outcome = *table.get(at)?;
    let offset = u16_at(table, at + 5)? as usize;
    let len = u16_at(table, at + 7)? as usize;
    Some(Picked {
        sets: table.get(offset..offset + len)?,
        strategy,
        outcome,
        scoped,
    })
}

thread_local! {
    /// Per-thread generator state (xorshift64*): each answer worker draws from its own, so
    /// weighted answers share no writes between workers.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A uniform 32-bit draw from this thread's generator. Allocates nothing.
#[inline]
pub fn draw() -> u32 {
    RNG.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // Seeded from the clock and this thread's own state address: differs per worker.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            x = (nanos ^ (state as *const Cell<u64> as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_of(scoped: bool, by_location: &[u16], weights: &[u32]) -> Vec<u8> {
        let bodies: Vec<Vec<u8>> = (0..weights.len().max(1))
            .map(|i| vec![i as u8; 3])
            .collect();
        let variants: Vec<VariantBody<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| VariantBody {
                outcome: 10 + i as u8,
                weight: weights.get(i).copied().unwrap_or(0),
                sets: b,
            })
            .collect();
        encode(1, scoped, by_location, &variants).unwrap()
    }

    #[test]
    fn scoped_tables_pick_by_location() {
        let t = table_of(true, &[0, 1, 1], &[0, 0]);
        let p = pick(&t, || 2, || panic!("no draw")).unwrap();
        assert_eq!(p.sets, [1, 1, 1]);
        assert_eq!(p.outcome, 11);
        assert!(p.scoped);
        let p = pick(&t, || 0, || panic!("no draw")).unwrap();
        assert_eq!(p.sets, [0, 0, 0]);
        let p = pick(&t, || 99, || panic!("no draw")).unwrap();
        assert_eq!(p.sets, [0, 0, 0], "unknown locations are nowhere");
    }

    #[test]
    fn unscoped_tables_never_locate() {
        let t = table_of(false, &[0], &[0]);
        let p = pick(&t, || panic!("no location"), || panic!("no draw")).unwrap();
        assert_eq!(p.sets, [0, 0, 0]);
        assert!(!p.scoped);
    }

    #[test]
    fn weighted_tables_draw() {
        let t = table_of(false, &[], &[1, 3]);
        assert_eq!(pick(&t, || 0, || 0).unwrap().sets, [0, 0, 0]);
        assert_eq!(pick(&t, || 0, || u32::MAX).unwrap().sets, [1, 1, 1]);
    }

    #[test]
    fn entries_without_a_marker_have_no_table() {
        assert!(table(&[0, 1, 0, 1, 0, 0]).is_none());
        // The additional-data pseudo-set (type 0) is an ordinary set, not a variant table.
        let mut entry = vec![0, 1, 0, 1, 0, 0];
        entry.extend_from_slice(&[0, 0, 0, 1, 0, 2, 5, 6]);
        assert!(table(&entry).is_none());
        let [hi, lo] = MARKER.to_be_bytes();
        entry.extend_from_slice(&[hi, lo, 0, 0, 0, 2, 7, 8]);
        assert_eq!(table(&entry), Some(&[7, 8][..]));
        // Every reader of the sets sees the additional data and stops at the variants.
        let types: Vec<u16> = crate::dns::store::sets(&entry).map(|s| s.rtype).collect();
        assert_eq!(types, [1, crate::dns::store::ADDITIONAL]);
    }
}
