//! Multi-query associative recall (MQAR; Arora et al., "Zoology", 2023, and the Based
//! evaluations): a sequence shows key-value pairs, then queries some of the keys; the
//! model must emit each queried key's value.
//!
//! Layout of one sequence of length `n` (token 0 is the filler):
//!
//! ```text
//! positions 0 .. 2K:   k_1 v_1 k_2 v_2 ... k_K v_K          (the pairs)
//! positions 2K .. n:   filler 0, except K query slots: at an even offset p from 2K,
//!                      k_{pi(j)} at 2K + p and v_{pi(j)} at 2K + p + 1
//! labels:              at each query key's position, its value; ignored elsewhere
//! ```
//!
//! Keys are K distinct tokens drawn from `1 ..= (V - 1) / 2`, values uniform (with
//! repetition) from `(V - 1) / 2 + 1 .. V`; the queries ask every key once, in a random
//! order `pi`, at K distinct slots drawn uniformly among the `(n - 2K) / 2` two-token
//! slots of the query region. (Zoology draws the gaps from a power law; uniform slots
//! are this crate's simplification.) The input holds the value after each query as
//! Zoology's does (the model is scored at the key, where it must predict the value).
//!
//! Determinism and the split: sequence `i` of split `s` (train 0, validation 1) comes
//! from SplitMix64 seeded with `seed ^ (s << 62) ^ (i * 0x9E3779B97F4A7C15)` mixed once
//! more, so any sequence is generated independently of the others (the training
//! stream's position is one integer, the checkpointed "data position"), and the two
//! splits are distinct streams from the same seed. Accuracy counts query positions
//! only.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The task's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mqar {
    /// Vocabulary size V (tokens `0..V`).
    pub vocab: usize,
    /// Sequence length n.
    pub seq_len: usize,
    /// Key-value pairs K (each queried once).
    pub pairs: usize,
    /// The data seed.
    pub seed: u64,
}

/// One MQAR sequence: input tokens, and labels with the query positions marked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Input tokens, length n.
    pub tokens: Vec<usize>,
    /// Target per position (the value at query positions, 0 elsewhere).
    pub labels: Vec<usize>,
    /// True at the K query positions.
    pub query: Vec<bool>,
}

/// Which stream a sequence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training stream (positions 0, 1, 2, ... as training proceeds).
    Train,
    /// The validation stream (a fixed prefix of it is the validation set).
    Validation,
}

impl Mqar {
    /// Checks that the sizes allow K distinct keys, K query slots, and a value range:
    /// `K >= 1`, `K <= (V - 1) / 2` keys and `V - 1 - (V - 1) / 2 >= 1` values,
    /// `n >= 4K` (pairs plus K two-token query slots).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidParameter {
            name: "mqar",
            value: format!("{self:?}"),
            reason,
        };
        let keys = self.vocab.saturating_sub(1) / 2;
        if self.pairs == 0 {
            return Err(bad("pairs must be at least 1".into()));
        }
        if self.pairs > keys || self.vocab < 3 {
            return Err(bad(format!(
                "{} pairs need {} distinct keys but vocab {} has {keys} key tokens ((V - 1) / 2)",
                self.pairs, self.pairs, self.vocab
            )));
        }
        if self.seq_len < 4 * self.pairs {
            return Err(bad(format!(
                "seq_len {} is shorter than 4 K = {} (the pairs and K two-token query slots)",
                self.seq_len,
                4 * self.pairs
            )));
        }
        Ok(())
    }

    /// Sequence `index` of `split` (validated sizes assumed; call [`validate`](Self::validate)).
    pub fn example(&self, split: Split, index: u64) -> Example {
        let s = match split {
            Split::Train => 0u64,
            Split::Validation => 1u64,
        };
        let mut mix =
            SplitMix64::new(self.seed ^ (s << 62) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rng = SplitMix64::new(mix.next_u64());
        let (n, k) = (self.seq_len, self.pairs);
        let n_keys = (self.vocab - 1) / 2;
        // K distinct keys: a partial Fisher-Yates shuffle of 1..=n_keys.
        let mut pool: Vec<usize> = (1..=n_keys).collect();
        for i in 0..k {
            let j = rng.int(i, n_keys - 1);
            pool.swap(i, j);
        }
        let keys = &pool[..k];
        let values: Vec<usize> = (0..k)
            .map(|_| rng.int(n_keys + 1, self.vocab - 1))
            .collect();
        let mut tokens = vec![0; n];
        let mut labels = vec![0; n];
        let mut query = vec![false; n];
        for i in 0..k {
            tokens[2 * i] = keys[i];
            tokens[2 * i + 1] = values[i];
        }
        // K distinct slots among (n - 2K) / 2, and a random order of the keys.
        let slots = (n - 2 * k) / 2;
        let mut slot_pool: Vec<usize> = (0..slots).collect();
        for i in 0..k {
            let j = rng.int(i, slots - 1);
            slot_pool.swap(i, j);
        }
        let mut order: Vec<usize> = (0..k).collect();
        for i in (1..k).rev() {
            let j = rng.int(0, i);
            order.swap(i, j);
        }
        for (slot, &which) in slot_pool[..k].iter().zip(&order) {
            let p = 2 * k + 2 * slot;
            tokens[p] = keys[which];
            tokens[p + 1] = values[which];
            labels[p] = values[which];
            query[p] = true;
        }
        Example {
            tokens,
            labels,
            query,
        }
    }
}

/// Accuracy on query positions: the fraction of them whose logits' argmax (the first
/// maximum) is the label. `logits` is `n x V` row-major.
pub fn query_accuracy(logits: &[f64], vocab: usize, ex: &Example) -> (usize, usize) {
    let mut right = 0;
    let mut total = 0;
    if vocab == 0 {
        return (0, 0);
    }
    for (i, row) in logits.chunks(vocab).enumerate().take(ex.labels.len()) {
        if !ex.query[i] {
            continue;
        }
        total += 1;
        let mut best = 0;
        for (j, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = j;
            }
        }
        if best == ex.labels[i] {
            right += 1;
        }
    }
    (right, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_well_formed_and_deterministic() {
        let t = Mqar {
            vocab: 21,
            seq_len: 32,
            pairs: 6,
            seed: 5,
        };
        t.validate().unwrap();
        for i in 0..50 {
            let ex = t.example(Split::Train, i);
            assert_eq!(ex, t.example(Split::Train, i));
            assert_ne!(ex, t.example(Split::Validation, i));
            assert_eq!(ex.query.iter().filter(|&&q| q).count(), 6);
            let mut map = std::collections::HashMap::new();
            for j in 0..6 {
                let (k, v) = (ex.tokens[2 * j], ex.tokens[2 * j + 1]);
                assert!((1..=10).contains(&k) && (11..21).contains(&v));
                assert!(map.insert(k, v).is_none(), "keys distinct");
            }
            for p in 12..32 {
                if ex.query[p] {
                    assert_eq!(ex.labels[p], map[&ex.tokens[p]]);
                    assert_eq!(ex.tokens[p + 1], ex.labels[p]);
                }
            }
            let asked: std::collections::HashSet<_> = (0..32)
                .filter(|&p| ex.query[p])
                .map(|p| ex.tokens[p])
                .collect();
            assert_eq!(asked.len(), 6, "every key asked once");
        }
        assert_ne!(t.example(Split::Train, 0), t.example(Split::Train, 1));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let ok = Mqar {
            vocab: 9,
            seq_len: 16,
            pairs: 4,
            seed: 0,
        };
        ok.validate().unwrap();
        for bad in [
            Mqar { pairs: 5, ..ok },
            Mqar { seq_len: 15, ..ok },
            Mqar { pairs: 0, ..ok },
            Mqar {
                vocab: 2,
                pairs: 1,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accuracy_counts_query_positions_only() {
        let ex = Example {
            tokens: vec![1, 2, 1],
            labels: vec![0, 0, 2],
            query: vec![false, false, true],
        };
        // position 2 predicts token 2 (right); position 0's wrong argmax is ignored
        let logits = [0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 1.0, 5.0];
        assert_eq!(query_accuracy(&logits, 3, &ex), (1, 1));
    }
}
