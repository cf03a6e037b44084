//! The commit watermark: which offset of each partition may be committed.
//!
//! Messages of one partition are processed concurrently and finish in any order. Committing
//! offset `n` tells Kafka that everything below `n` is done, so the committable offset is the
//! lowest offset still being processed, or one past the highest offset seen when nothing is
//! pending. Gaps in offsets (compaction, transaction markers) need no special care: only offsets
//! actually received are tracked.
//!
//! Each assignment of a partition gets a new generation. When a partition is revoked, work still
//! running for it must not move the watermark of a later assignment (another replica may own the
//! partition by then), so completions carry the generation they started under and stale ones are
//! ignored.

use std::collections::{BTreeSet, HashMap};

/// A topic and partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    pending: BTreeSet<i64>,
    next_offset: Option<i64>,
    committed: Option<i64>,
}

impl PartitionState {
    fn watermark(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next_offset)
    }
}

/// Tracks in-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    next_generation: u64,
}

/// Proof that an offset was registered; hand it back to [`OffsetTracker::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Topic and partition of the message.
    pub partition: TopicPartition,
    /// Offset of the message.
    pub offset: i64,
    generation: u64,
}

impl OffsetTracker {
    /// Starts tracking newly assigned partitions (a fresh generation each).
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        for partition in partitions {
            self.next_generation += 1;
            let state = PartitionState {
                generation: self.next_generation,
                ..PartitionState::default()
            };
            self.partitions.insert(partition, state);
        }
    }

    /// Stops tracking revoked partitions, returning the offsets that may still be committed for
    /// them (the final commit before another consumer takes over).
    pub fn revoke(&mut self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let mut final_offsets = Vec::new();
        for partition in partitions {
            if let Some(state) = self.partitions.remove(partition) {
                if let Some(offset) = state.watermark().filter(|w| Some(*w) != state.committed) {
                    final_offsets.push((partition.clone(), offset));
                }
            }
        }
        final_offsets
    }

    /// Registers a message about to be processed. A partition not (yet) known is tracked on the
    /// spot: rdkafka can hand out a message before the assignment callback has been observed.
    pub fn begin(&mut self, partition: TopicPartition, offset: i64) -> InFlight {
        if !self.partitions.contains_key(&partition) {
            self.assign([partition.clone()]);
        }
        let state = self.partitions.get_mut(&partition).expect("tracked above");
        state.pending.insert(offset);
        state.next_offset = Some(state.next_offset.map_or(offset + 1, |next| next.max(offset + 1)));
        InFlight {
            partition,
            offset,
            generation: state.generation,
        }
    }

    /// Marks a message finished (all its outputs acknowledged). Returns false when the partition
    /// was revoked meanwhile, in which case the completion no longer counts.
    pub fn finish(&mut self, in_flight: &InFlight) -> bool {
        match self.partitions.get_mut(&in_flight.partition) {
            Some(state) if state.generation == in_flight.generation => state.pending.remove(&in_flight.offset),
            _ => false,
        }
    }

    /// Offsets that may be committed and differ from the last commit.
    pub fn commit_candidates(&self) -> Vec<(TopicPartition, i64)> {
        let mut candidates: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(partition, state)| {
                let watermark = state.watermark()?;
                (Some(watermark) != state.committed).then(|| (partition.clone(), watermark))
            })
            .collect();
        candidates.sort();
        candidates
    }

    /// Records a successful commit.
    pub fn mark_committed(&mut self, committed: &[(TopicPartition, i64)]) {
        for (partition, offset) in committed {
            if let Some(state) = self.partitions.get_mut(partition) {
                state.committed = Some(state.committed.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }

    /// The offset that may be committed for `partition` now.
    pub fn watermark(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions.get(partition).and_then(PartitionState::watermark)
    }

    /// The last offset committed for `partition` by this process, if any.
    pub fn committed(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions.get(partition).and_then(|state| state.committed)
    }

    /// Number of messages being processed.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|state| state.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn tp(partition: i32) -> TopicPartition {
        ("in".to_owned(), partition)
    }

    #[test]
    fn watermark_waits_for_the_lowest_unfinished_offset() {
        let mut tracker = OffsetTracker::default();
        let handles: Vec<_> = (10..15).map(|offset| tracker.begin(tp(0), offset)).collect();
        assert_eq!(tracker.watermark(&tp(0)), Some(10));
        // (offset finished, watermark after it): 10 holds 11 and 12 back, 13 holds 14.
        for (offset, watermark) in [(12, 10), (11, 10), (10, 13), (14, 13), (13, 15)] {
            tracker.finish(&handles[offset - 10]);
            assert_eq!(tracker.watermark(&tp(0)), Some(watermark), "after {offset}");
        }
    }

    #[test]
    fn gaps_in_offsets_do_not_stall_the_watermark() {
        let mut tracker = OffsetTracker::default();
        let handles = [3, 7].map(|offset| tracker.begin(tp(0), offset));
        for handle in handles.iter().rev() {
            tracker.finish(handle);
        }
        assert_eq!(tracker.watermark(&tp(0)), Some(8), "4 to 6 were never consumed");
    }

    #[test]
    fn random_completion_order_never_passes_an_unfinished_offset() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut tracker = OffsetTracker::default();
            let count = rng.random_range(1..60);
            let mut handles: Vec<_> = (0..count).map(|offset| tracker.begin(tp(1), offset)).collect();
            handles.shuffle(&mut rng);
            let mut finished = BTreeSet::new();
            for handle in handles {
                tracker.finish(&handle);
                finished.insert(handle.offset);
                let watermark = tracker.watermark(&tp(1)).unwrap();
                assert!((0..watermark).all(|offset| finished.contains(&offset)));
                let first_unfinished = (0..count).find(|offset| !finished.contains(offset)).unwrap_or(count);
                assert_eq!(watermark, first_unfinished, "watermark is as high as it may be");
            }
        }
    }

    #[test]
    fn commit_candidates_skip_unchanged_partitions() {
        let mut tracker = OffsetTracker::default();
        let a = tracker.begin(tp(0), 0);
        let b = tracker.begin(tp(1), 5);
        tracker.finish(&a);
        tracker.finish(&b);
        let candidates = tracker.commit_candidates();
        assert_eq!(candidates, vec![(tp(0), 1), (tp(1), 6)]);
        tracker.mark_committed(&candidates);
        assert!(tracker.commit_candidates().is_empty());
        let c = tracker.begin(tp(1), 6);
        assert!(tracker.commit_candidates().is_empty(), "watermark still 6");
        tracker.finish(&c);
        assert_eq!(tracker.commit_candidates(), vec![(tp(1), 7)]);
    }

    #[test]
    fn completions_from_a_revoked_generation_are_ignored() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.begin(tp(0), 4);
        assert_eq!(tracker.revoke(&[tp(0)]), vec![(tp(0), 4)]);
        tracker.assign([tp(0)]);
        let new = tracker.begin(tp(0), 4);
        assert!(!tracker.finish(&old), "stale completion must not count");
        assert_eq!(tracker.watermark(&tp(0)), Some(4));
        assert!(tracker.finish(&new));
        assert_eq!(tracker.watermark(&tp(0)), Some(5));
    }
}
