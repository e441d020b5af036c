//! The ledger rows this run's input has had, by rowid, with the line of their first occurrence: the
//! duplicate check for ids the ledger knows, without a set of every id in the file.
//!
//! Lines are kept per block of consecutive rowids. A rerun meets its rows in the order it wrote
//! them, so a block's lines are close together: one base line and a 16-bit offset per row, about
//! 2.2 bytes per row (10M rows: 22 MB, where a plain `u32` per rowid took 40). A block whose lines
//! are far apart (a file in another order than the ledger) keeps a `u32` per row instead, about
//! 4.2 bytes: never much worse than the plain array.

use std::collections::HashMap;

/// Rowids per block.
const BLOCK: usize = 128;
/// How far before a block's first line its base is set: rows answered out of order are marked at
/// their commit, slightly behind the lines already read.
const BACKWARD: u64 = 2048;

#[derive(Debug, Default)]
enum Block {
    #[default]
    Empty,
    /// Lines within 65,534 of `base`: offset 0 is "not seen", otherwise line = base + offset - 1.
    Near {
        base: u64,
        offsets: Box<[u16; BLOCK]>,
    },
    /// Any lines (0 is "not seen").
    Far(Box<[u32; BLOCK]>),
}

/// The first line of each ledger row seen in this run, and the phone it had where that differs
/// from the ledger's.
#[derive(Debug, Default)]
pub struct Seen {
    blocks: Vec<Block>,
    phones: HashMap<i64, String>,
    /// One bit per rowid: rows named only by rows rejected for another field (their id could be
    /// read). They are in the file for `--prune`, but no line of theirs is a first occurrence.
    mentioned: Vec<u64>,
}

impl Seen {
    /// The first line and phone of a row seen before; `ledger_phone` is what the ledger holds.
    pub fn get<'a>(&'a self, rowid: i64, ledger_phone: &'a str) -> Option<(u64, &'a str)> {
        let line = self.line(rowid)?;
        let phone = self.phones.get(&rowid).map_or(ledger_phone, String::as_str);
        Some((line, phone))
    }

    /// The first line of a row seen in this run.
    pub fn line(&self, rowid: i64) -> Option<u64> {
        let (block, slot) = place(rowid)?;
        match self.blocks.get(block)? {
            Block::Empty => None,
            Block::Near { base, offsets } => {
                let offset = offsets[slot];
                (offset != 0).then(|| base + u64::from(offset) - 1)
            }
            Block::Far(lines) => (lines[slot] != 0).then(|| u64::from(lines[slot])),
        }
    }

    /// Notes that a rejected row named the ledger row `rowid`.
    pub fn mention(&mut self, rowid: i64) {
        let Ok(bit) = usize::try_from(rowid) else {
            return;
        };
        let word = bit / 64;
        if self.mentioned.len() <= word {
            self.mentioned.resize(word + 1, 0);
        }
        self.mentioned[word] |= 1 << (bit % 64);
    }

    /// Whether the input had the ledger row `rowid`, valid or not.
    pub fn in_file(&self, rowid: i64) -> bool {
        let mentioned = usize::try_from(rowid).is_ok_and(|bit| {
            self.mentioned
                .get(bit / 64)
                .is_some_and(|word| word & (1 << (bit % 64)) != 0)
        });
        mentioned || self.line(rowid).is_some()
    }

    /// Notes that `rowid` was first seen at `line` with `phone`.
    pub fn mark(&mut self, rowid: i64, line: u64, phone: &str, ledger_phone: &str) {
        let Some((block, slot)) = place(rowid) else {
            return;
        };
        if self.blocks.len() <= block {
            self.blocks.resize_with(block + 1, Block::default);
        }
        let entry = &mut self.blocks[block];
        if let Block::Empty = entry {
            *entry = Block::Near {
                base: line.saturating_sub(BACKWARD),
                offsets: Box::new([0; BLOCK]),
            };
        }
        if let Block::Near { base, offsets } = entry {
            match line.checked_sub(*base).map(|d| u16::try_from(d + 1)) {
                Some(Ok(offset)) if offset != u16::MAX => {
                    offsets[slot] = offset;
                }
                _ => {
                    let mut lines = Box::new([0u32; BLOCK]);
                    for (to, &offset) in lines.iter_mut().zip(offsets.iter()) {
                        if offset != 0 {
                            *to = saturate(*base + u64::from(offset) - 1);
                        }
                    }
                    *entry = Block::Far(lines);
                }
            }
        }
        if let Block::Far(lines) = entry {
            lines[slot] = saturate(line);
        }
        if phone != ledger_phone {
            self.phones.insert(rowid, phone.to_string());
        }
    }
}

fn place(rowid: i64) -> Option<(usize, usize)> {
    let index = usize::try_from(rowid).ok()?;
    Some((index / BLOCK, index % BLOCK))
}

fn saturate(line: u64) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_exactly_near_or_far() {
        let mut seen = Seen::default();
        // Near: a block's rows at nearby lines, some behind the first.
        seen.mark(5, 10_000, "p", "p");
        seen.mark(6, 9_000, "p", "p");
        seen.mark(7, 10_001, "q", "p");
        assert!(matches!(seen.blocks[0], Block::Near { .. }));
        // Far: a line past the 16-bit window turns the block into full lines, keeping the others.
        seen.mark(8, 500_000, "p", "p");
        seen.mark(9, 3, "p", "p");
        assert!(matches!(seen.blocks[0], Block::Far(_)));
        let lines: Vec<Option<u64>> = (4..=10).map(|r| seen.line(r)).collect();
        assert_eq!(
            lines,
            [
                None,
                Some(10_000),
                Some(9_000),
                Some(10_001),
                Some(500_000),
                Some(3),
                None
            ]
        );
        assert_eq!(seen.get(7, "p"), Some((10_001, "q")));
        assert_eq!(seen.get(6, "p"), Some((9_000, "p")));
        // Rowids far out and out of range.
        seen.mark(1_000_000, 2, "p", "p");
        assert_eq!(seen.line(1_000_000), Some(2));
        assert_eq!(seen.line(999_999), None);
        assert_eq!(seen.line(-1), None);
        assert_eq!(seen.line(50_000_000), None);
    }

    #[test]
    fn rows_mentioned_by_rejected_rows_are_in_the_file_without_a_line() {
        let mut seen = Seen::default();
        seen.mark(3, 7, "p", "p");
        seen.mention(130);
        seen.mention(-4);
        assert!(seen.in_file(3) && seen.in_file(130));
        assert_eq!(
            seen.line(130),
            None,
            "a rejected row is no first occurrence"
        );
        for rowid in [-4, 0, 4, 129, 131, 100_000] {
            assert!(!seen.in_file(rowid), "{rowid}");
        }
    }
}
