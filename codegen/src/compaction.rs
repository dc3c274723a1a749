//! Compact materialisation, decided per relation: a per-edge tensor that depends only on
//! (source, relation) is stored once per unique pair where that removes enough rows. Hector
//! switches compaction on or off for the whole graph and loses on graphs where it does not pay;
//! here each relation decides for itself.

/// A relation's statistics and the decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelationCompaction {
    pub edges: usize,
    pub unique_sources: usize,
    pub compacted: bool,
}

/// Compact a relation when its unique sources are at most this fraction of its edges.
pub const COMPACTION_THRESHOLD: f64 = 0.9;

/// The decision for every relation from its edge and unique-source counts.
pub fn choose_compaction(edges: &[usize], unique_sources: &[usize]) -> Vec<RelationCompaction> {
    edges
        .iter()
        .zip(unique_sources)
        .map(|(&e, &u)| RelationCompaction {
            edges: e,
            unique_sources: u,
            compacted: e > 0 && (u as f64) <= COMPACTION_THRESHOLD * e as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_only_where_rows_disappear() {
        let d = choose_compaction(&[100, 100, 0, 10], &[20, 95, 0, 9]);
        assert_eq!(d.iter().map(|c| c.compacted).collect::<Vec<_>>(), vec![true, false, false, true]);
    }
}
