//! Which replicas are missing: a pure function of the chunk ids, the
//! destination's pickable nodes, the RF and the nodes' `HasChunks` answers.
//!
//! Each chunk should be on the `min(rf, nodes)` nodes placement picks among
//! the nodes that are up (`cairn_core::placement`). The pass asks each such
//! node, in one batch, about the ids it should hold ([`asks`]); a `false`
//! is a replica to copy, and a node that did not answer leaves its ids
//! unknown (counted in the backlog, never copied blindly) ([`missing`]).

use cairn_core::placement::{place, Candidate};
use cairn_core::ChunkId;
use std::collections::BTreeMap;

/// For each node (an index into `cands`), the ids it should hold.
pub fn asks(ids: &[ChunkId], cands: &[Candidate], rf: usize) -> BTreeMap<usize, Vec<ChunkId>> {
    let mut out: BTreeMap<usize, Vec<ChunkId>> = BTreeMap::new();
    for id in ids {
        for node in place(id, cands, rf) {
            out.entry(node).or_default().push(*id);
        }
    }
    out
}

/// What the answers say is to be done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// `(chunk, node)`: the node lacks a replica it should hold.
    pub copy: Vec<(ChunkId, usize)>,
    /// `(node, ids)`: the node did not answer (or answered the wrong number
    /// of flags), so nothing is known of these replicas.
    pub unknown: Vec<(usize, u64)>,
}

/// The replicas missing, given each asked node's answer: `Some(present)`,
/// one flag per id asked in order, or `None` when it did not answer.
pub fn missing(
    asks: &BTreeMap<usize, Vec<ChunkId>>,
    answers: &BTreeMap<usize, Option<Vec<bool>>>,
) -> Missing {
    let mut out = Missing::default();
    for (node, ids) in asks {
        match answers.get(node) {
            Some(Some(present)) if present.len() == ids.len() => {
                let lacking = ids.iter().zip(present).filter(|(_, has)| !**has);
                out.copy.extend(lacking.map(|(id, _)| (*id, *node)));
            }
            _ => out.unknown.push((*node, ids.len() as u64)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands() -> Vec<Candidate> {
        [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]
            .iter()
            .map(|(n, az)| Candidate { node_id: n.to_string(), az: az.to_string() })
            .collect()
    }

    fn ids(n: u64) -> Vec<ChunkId> {
        (0..n).map(|i| ChunkId::of(&i.to_le_bytes())).collect()
    }

    #[test]
    fn each_chunk_is_asked_of_exactly_its_placement() {
        let (c, ids) = (cands(), ids(50));
        let a = asks(&ids, &c, 3);
        assert_eq!(a.values().map(Vec::len).sum::<usize>(), 150);
        for id in &ids {
            let mut at: Vec<usize> =
                a.iter().filter(|(_, v)| v.contains(id)).map(|(n, _)| *n).collect();
            let mut want = place(id, &c, 3);
            at.sort_unstable();
            want.sort_unstable();
            assert_eq!(at, want);
        }
        // Fewer nodes than the RF: every node holds every chunk.
        let two = &c[..2];
        assert!(asks(&ids, two, 3).values().all(|v| v.len() == 50));
    }

    #[test]
    fn lacking_replicas_are_copied_and_silent_nodes_are_unknown() {
        let (c, ids) = (cands(), ids(20));
        let a = asks(&ids, &c, 3);
        // Every node holds everything but the first id it was asked about;
        // node 3 does not answer, node 2 answers with the wrong count.
        let mut answers = BTreeMap::new();
        for (node, asked) in &a {
            let flags = (0..asked.len()).map(|i| i != 0).collect::<Vec<bool>>();
            answers.insert(*node, Some(flags));
        }
        answers.insert(3, None);
        answers.insert(2, Some(vec![true]));
        let m = missing(&a, &answers);
        let mut want: Vec<(ChunkId, usize)> =
            [0usize, 1].iter().filter_map(|n| a.get(n).map(|v| (v[0], *n))).collect();
        let mut got = m.copy.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(m.unknown, vec![(2, a[&2].len() as u64), (3, a[&3].len() as u64)]);
        // Everything present: nothing to do.
        let all: BTreeMap<usize, Option<Vec<bool>>> =
            a.iter().map(|(n, v)| (*n, Some(vec![true; v.len()]))).collect();
        assert_eq!(missing(&a, &all), Missing::default());
    }
}
