//! Column encodings for point chunks: the values of one field of many points, written together.
//!
//! The ideas of Gorilla / Prometheus TSDB chunks and Parquet pages, kept simple:
//! - **integers** are frame-of-reference bit-packed in blocks of [`BLOCK`]: each block stores
//!   its minimum and packs `value - minimum` at the block's bit width, so a block of zeros costs
//!   two bytes and a block of small deltas a few bits per value;
//! - **sequences** (time, coordinates, counters) are stored as their first value, first delta and
//!   then differences of order 1 or 2 (delta-of-delta: steady sampling or steady motion is zeros);
//! - **floats** are fixed-point at the smallest power of ten that gives every value of the column
//!   back bit for bit ("quantised to their real precision", found per chunk), else raw IEEE bits,
//!   so a column never loses anything it was given;
//! - **flags** are one byte when all equal, else a bitmap; optional fields are a presence flag
//!   column plus the present values.
//!
//! Reading never panics on any bytes: every length and width is checked, and a value that does
//! not fit is [`Truncated`].

use tantivy_bitpacker::{BitPacker, BitUnpacker, compute_num_bits};

/// Values per bit-packed block: small enough that one outlier widens few values, large enough that
/// a block's header (minimum and width) is a small share.
pub(crate) const BLOCK: usize = 128;

/// Largest power of ten tried for fixed-point floats (1e-9: finer than any sensor here).
const MAX_EXPONENT: u8 = 9;

/// Marks a float column stored as raw IEEE bits.
const RAW_FLOATS: u8 = 0xff;

/// Flag column: all false / all true / a bitmap follows.
const FLAGS_ALL_FALSE: u8 = 0;
const FLAGS_ALL_TRUE: u8 = 1;
const FLAGS_BITMAP: u8 = 2;

/// The bytes ended early or hold a value that does not fit: the chunk is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

/// Result of reading a column.
pub(crate) type ReadResult<T> = Result<T, Truncated>;

/// Appends columns to a byte buffer.
#[derive(Default)]
pub(crate) struct ColumnWriter {
    pub(crate) out: Vec<u8>,
}

impl ColumnWriter {
    /// An unsigned LEB128 varint.
    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    /// A signed varint (zigzag).
    pub(crate) fn svarint(&mut self, v: i64) {
        self.varint(zigzag(v));
    }

    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    /// Integers, bit-packed by block (frame of reference).
    pub(crate) fn ints(&mut self, values: &[i64]) {
        for block in values.chunks(BLOCK) {
            let min = block.iter().copied().min().unwrap_or(0);
            let max_offset = block.iter().map(|&v| v.wrapping_sub(min) as u64).max().unwrap_or(0);
            let bits = compute_num_bits(max_offset);
            self.svarint(min);
            self.out.push(bits);
            let mut packer = BitPacker::new();
            for &v in block {
                // Writing into a Vec cannot fail.
                let _ = packer.write(v.wrapping_sub(min) as u64, bits, &mut self.out);
            }
            let _ = packer.close(&mut self.out);
        }
    }

    /// A sequence as its first value, its first delta (order 2) and differences of `order`.
    pub(crate) fn sequence(&mut self, values: &[i64], order: Order) {
        let Some(&first) = values.first() else { return };
        self.svarint(first);
        let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        match order {
            Order::Delta => self.ints(&deltas),
            Order::DeltaOfDelta => {
                let Some(&first_delta) = deltas.first() else { return };
                self.svarint(first_delta);
                let dods: Vec<i64> = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
                self.ints(&dods);
            }
        }
    }

    /// Flags: one byte when all are equal, else a bitmap.
    pub(crate) fn flags(&mut self, values: impl ExactSizeIterator<Item = bool> + Clone) {
        let n = values.len();
        let set = values.clone().filter(|&b| b).count();
        if set == 0 {
            self.out.push(FLAGS_ALL_FALSE);
        } else if set == n {
            self.out.push(FLAGS_ALL_TRUE);
        } else {
            self.out.push(FLAGS_BITMAP);
            let start = self.out.len();
            self.out.resize(start + n.div_ceil(8), 0);
            for (i, flag) in values.enumerate() {
                if flag {
                    self.out[start + i / 8] |= 1 << (i % 8);
                }
            }
        }
    }

    /// Floats, lossless: fixed-point at the smallest exact power of ten, else raw bits.
    pub(crate) fn floats(&mut self, values: &[f64], order: Order) {
        match exact_exponent(values) {
            Some(exponent) => {
                self.out.push(exponent);
                let scale = 10f64.powi(i32::from(exponent));
                let ints: Vec<i64> = values.iter().map(|v| (v * scale).round() as i64).collect();
                self.sequence(&ints, order);
            }
            None => {
                self.out.push(RAW_FLOATS);
                let bits: Vec<i64> = values.iter().map(|v| v.to_bits() as i64).collect();
                self.ints(&bits);
            }
        }
    }

    /// Optional floats: presence flags, then the present values.
    pub(crate) fn optional_floats(&mut self, values: &[Option<f64>], order: Order) {
        self.flags(values.iter().map(Option::is_some));
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        self.floats(&present, order);
    }
}

/// Which differences a sequence stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Differences between neighbours: values that drift (speed, altitude, distance).
    Delta,
    /// Differences of those: values that change at a steady rate (time, position, counters).
    DeltaOfDelta,
}

/// Reads columns back from bytes.
pub(crate) struct ColumnReader<'a> {
    bytes: &'a [u8],
}

impl<'a> ColumnReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ColumnReader { bytes }
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn byte(&mut self) -> ReadResult<u8> {
        let (&first, rest) = self.bytes.split_first().ok_or(Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, n: usize) -> ReadResult<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn varint(&mut self) -> ReadResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).ok_or(Truncated)?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Truncated)
    }

    pub(crate) fn svarint(&mut self) -> ReadResult<i64> {
        self.varint().map(unzigzag)
    }

    /// A count that must not exceed `max` (so no allocation is sized by corrupt bytes).
    pub(crate) fn count(&mut self, max: usize) -> ReadResult<usize> {
        let n = usize::try_from(self.varint()?).map_err(|_| Truncated)?;
        if n > max {
            return Err(Truncated);
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self) -> ReadResult<&'a [u8]> {
        let n = self.count(self.bytes.len())?;
        self.take(n)
    }

    pub(crate) fn ints(&mut self, n: usize) -> ReadResult<Vec<i64>> {
        let mut out = Vec::with_capacity(n.min(self.bytes.len().saturating_mul(8)));
        let mut unpacked = [0u64; BLOCK];
        while out.len() < n {
            let len = (n - out.len()).min(BLOCK);
            let min = self.svarint()?;
            let bits = self.byte()?;
            if bits > 56 && bits != 64 {
                return Err(Truncated);
            }
            let data = self.take((len * usize::from(bits)).div_ceil(8))?;
            BitUnpacker::new(bits).get_range(0, data, &mut unpacked[..len]);
            out.extend(unpacked[..len].iter().map(|&offset| min.wrapping_add(offset as i64)));
        }
        Ok(out)
    }

    pub(crate) fn sequence(&mut self, n: usize, order: Order) -> ReadResult<Vec<i64>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut values = Vec::with_capacity(n);
        values.push(self.svarint()?);
        match order {
            Order::Delta => {
                for delta in self.ints(n - 1)? {
                    let last = values[values.len() - 1];
                    values.push(i64::wrapping_add(last, delta));
                }
            }
            Order::DeltaOfDelta => {
                if n == 1 {
                    return Ok(values);
                }
                let mut delta = self.svarint()?;
                values.push(values[0].wrapping_add(delta));
                for dod in self.ints(n - 2)? {
                    delta = delta.wrapping_add(dod);
                    let last = values[values.len() - 1];
                    values.push(last.wrapping_add(delta));
                }
            }
        }
        Ok(values)
    }

    pub(crate) fn flags(&mut self, n: usize) -> ReadResult<Vec<bool>> {
        match self.byte()? {
            FLAGS_ALL_FALSE => Ok(vec![false; n]),
            FLAGS_ALL_TRUE => Ok(vec![true; n]),
            FLAGS_BITMAP => {
                let bitmap = self.take(n.div_ceil(8))?;
                Ok((0..n).map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0).collect())
            }
            _ => Err(Truncated),
        }
    }

    pub(crate) fn floats(&mut self, n: usize, order: Order) -> ReadResult<Vec<f64>> {
        match self.byte()? {
            RAW_FLOATS => Ok(self.ints(n)?.into_iter().map(|bits| f64::from_bits(bits as u64)).collect()),
            exponent if exponent <= MAX_EXPONENT => {
                let scale = 10f64.powi(i32::from(exponent));
                Ok(self.sequence(n, order)?.into_iter().map(|v| v as f64 / scale).collect())
            }
            _ => Err(Truncated),
        }
    }

    pub(crate) fn optional_floats(&mut self, n: usize, order: Order) -> ReadResult<Vec<Option<f64>>> {
        let present = self.flags(n)?;
        let count = present.iter().filter(|&&p| p).count();
        let mut values = self.floats(count, order)?.into_iter();
        present.into_iter().map(|p| if p { values.next().ok_or(Truncated).map(Some) } else { Ok(None) }).collect()
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Largest magnitude a fixed-point value may have and still be an exact integer in an `f64`.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// The smallest power of ten at which every value reads back bit for bit, if any.
fn exact_exponent(values: &[f64]) -> Option<u8> {
    let mut needed = 0u8;
    for &v in values {
        needed = needed.max(value_exponent(v, needed)?);
    }
    Some(needed)
}

/// The smallest exponent from `from` at which `v` is exact.
fn value_exponent(v: f64, from: u8) -> Option<u8> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    (from..=MAX_EXPONENT).find(|&exponent| {
        let scale = 10f64.powi(i32::from(exponent));
        let scaled = (v * scale).round();
        scaled.abs() < MAX_EXACT && (scaled / scale).to_bits() == v.to_bits()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn steady_sequences_cost_almost_nothing() {
        let ts: Vec<i64> = (0..1000).map(|i| 1_795_564_740_000 + i * 1000).collect();
        let mut w = ColumnWriter::default();
        w.sequence(&ts, Order::DeltaOfDelta);
        assert!(w.out.len() < 40, "1000 steady timestamps in {} bytes", w.out.len());
        assert_eq!(ColumnReader::new(&w.out).sequence(ts.len(), Order::DeltaOfDelta).unwrap(), ts);
    }

    #[test]
    fn floats_use_their_decimal_precision_and_come_back_exactly() {
        let lat = [52.520008, 52.520108, 52.520209, 52.52031];
        assert_eq!(exact_exponent(&lat), Some(6));
        assert_eq!(exact_exponent(&[13.9, 14.0, 14.25]), Some(2));
        assert_eq!(exact_exponent(&[1.0 / 3.0]), None, "not a short decimal: raw bits");
        let mut w = ColumnWriter::default();
        w.floats(&lat, Order::DeltaOfDelta);
        assert_eq!(ColumnReader::new(&w.out).floats(lat.len(), Order::DeltaOfDelta).unwrap(), lat);
    }

    #[test]
    fn flags_are_a_byte_when_uniform() {
        let mut w = ColumnWriter::default();
        w.flags([true; 300].into_iter());
        assert_eq!(w.out.len(), 1);
        let mixed: Vec<bool> = (0..20).map(|i| i % 3 == 0).collect();
        let mut w = ColumnWriter::default();
        w.flags(mixed.iter().copied());
        assert_eq!(ColumnReader::new(&w.out).flags(20).unwrap(), mixed);
    }

    #[test]
    fn a_block_of_zeros_costs_two_bytes() {
        let mut w = ColumnWriter::default();
        w.ints(&[0; BLOCK]);
        assert_eq!(w.out.len(), 2);
    }

    proptest! {
        #[test]
        fn integers_round_trip(values in proptest::collection::vec(any::<i64>(), 0..600)) {
            let mut w = ColumnWriter::default();
            w.ints(&values);
            w.sequence(&values, Order::Delta);
            w.sequence(&values, Order::DeltaOfDelta);
            let mut r = ColumnReader::new(&w.out);
            prop_assert_eq!(r.ints(values.len()).unwrap(), values.clone());
            prop_assert_eq!(r.sequence(values.len(), Order::Delta).unwrap(), values.clone());
            prop_assert_eq!(r.sequence(values.len(), Order::DeltaOfDelta).unwrap(), values.clone());
            prop_assert!(r.is_empty());
        }

        #[test]
        fn floats_round_trip_bit_for_bit(values in proptest::collection::vec(
            prop_oneof![any::<f64>(), (-1_800_000_000i64..1_800_000_000).prop_map(|v| v as f64 / 1e7)], 0..300)
        ) {
            let optional: Vec<Option<f64>> = values.iter().enumerate().map(|(i, v)| (i % 4 != 0).then_some(*v)).collect();
            let mut w = ColumnWriter::default();
            w.floats(&values, Order::DeltaOfDelta);
            w.optional_floats(&optional, Order::Delta);
            let mut r = ColumnReader::new(&w.out);
            let back: Vec<u64> = r.floats(values.len(), Order::DeltaOfDelta).unwrap().iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(back, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let back: Vec<Option<u64>> =
                r.optional_floats(optional.len(), Order::Delta).unwrap().iter().map(|v| v.map(f64::to_bits)).collect();
            prop_assert_eq!(back, optional.iter().map(|v| v.map(f64::to_bits)).collect::<Vec<_>>());
        }

        #[test]
        fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..400) {
            let mut r = ColumnReader::new(&bytes);
            let _ = r.floats(n, Order::DeltaOfDelta);
            let mut r = ColumnReader::new(&bytes);
            let _ = r.optional_floats(n, Order::Delta);
            let mut r = ColumnReader::new(&bytes);
            let _ = r.flags(n);
            let _ = r.bytes();
        }
    }
}
