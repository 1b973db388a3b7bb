//! Placement: which chunk nodes hold a chunk. A pure function of the chunk id,
//! the candidate nodes and the replication factor.
//!
//! Rendezvous hashing: every (chunk, node) pair gets a score; the highest
//! scores win, so adding or removing a node moves only the chunks whose winner
//! set it enters or leaves. The zone rule comes first: replicas go to distinct
//! AZs while there are AZs left, then to distinct nodes.

use crate::block::ChunkId;

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: String,
    pub az: String,
}

fn score(chunk: &ChunkId, node_id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&chunk.0);
    h.update(node_id.as_bytes());
    let out = h.finalize();
    let b = out.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Indexes into `nodes` of the replicas of `chunk`, best first. Returns
/// `min(rf, nodes.len())` distinct nodes.
pub fn place(chunk: &ChunkId, nodes: &[Candidate], rf: usize) -> Vec<usize> {
    let mut ranked: Vec<(u64, usize)> =
        nodes.iter().enumerate().map(|(i, n)| (score(chunk, &n.node_id), i)).collect();
    // Ties are astronomically unlikely; break them by node id for determinism.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| nodes[a.1].node_id.cmp(&nodes[b.1].node_id)));
    let want = rf.min(nodes.len());
    let mut chosen: Vec<usize> = Vec::with_capacity(want);
    let mut azs: Vec<&str> = Vec::new();
    for &(_, i) in &ranked {
        if chosen.len() == want {
            break;
        }
        if !azs.contains(&nodes[i].az.as_str()) {
            azs.push(&nodes[i].az);
            chosen.push(i);
        }
    }
    for &(_, i) in &ranked {
        if chosen.len() == want {
            break;
        }
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen
}

/// Checks a placement against the rules: right count, distinct nodes, and as
/// many distinct AZs as possible.
pub fn check(nodes: &[Candidate], rf: usize, chosen: &[usize]) -> Result<(), String> {
    let want = rf.min(nodes.len());
    if chosen.len() != want {
        return Err(format!("{} replicas, want {want}", chosen.len()));
    }
    let mut seen = chosen.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != chosen.len() {
        return Err("a node holds two replicas".into());
    }
    let mut all_azs: Vec<&str> = nodes.iter().map(|n| n.az.as_str()).collect();
    all_azs.sort_unstable();
    all_azs.dedup();
    let mut used: Vec<&str> = chosen.iter().map(|&i| nodes[i].az.as_str()).collect();
    used.sort_unstable();
    used.dedup();
    if used.len() < want.min(all_azs.len()) {
        return Err(format!(
            "replicas span {} AZs, {} possible",
            used.len(),
            want.min(all_azs.len())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(&str, &str)]) -> Vec<Candidate> {
        spec.iter().map(|(n, a)| Candidate { node_id: n.to_string(), az: a.to_string() }).collect()
    }

    fn chunks(n: usize) -> Vec<ChunkId> {
        (0..n).map(|i| ChunkId::of(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn spreads_over_azs_and_checks() {
        let ns =
            nodes(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]);
        for c in chunks(500) {
            let p = place(&c, &ns, 3);
            check(&ns, 3, &p).expect("valid placement");
            let mut azs: Vec<_> = p.iter().map(|&i| ns[i].az.clone()).collect();
            azs.sort();
            assert_eq!(azs, vec!["a", "b", "c"]);
        }
    }

    #[test]
    fn fewer_azs_than_rf_uses_distinct_nodes() {
        let ns = nodes(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]);
        for c in chunks(200) {
            let p = place(&c, &ns, 3);
            check(&ns, 3, &p).expect("valid placement");
        }
        let one = nodes(&[("a1", "a")]);
        assert_eq!(place(&ChunkId::of(b"x"), &one, 3), vec![0]);
        assert!(place(&ChunkId::of(b"x"), &[], 3).is_empty());
    }

    #[test]
    fn deterministic_and_order_independent() {
        let ns = nodes(&[("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a")]);
        let mut rev = ns.clone();
        rev.reverse();
        for c in chunks(100) {
            let p: Vec<_> = place(&c, &ns, 2).iter().map(|&i| ns[i].node_id.clone()).collect();
            let q: Vec<_> = place(&c, &rev, 2).iter().map(|&i| rev[i].node_id.clone()).collect();
            assert_eq!(p, q);
        }
    }

    #[test]
    fn balanced() {
        let ns = nodes(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]);
        let mut counts = [0usize; 4];
        for c in chunks(4000) {
            for i in place(&c, &ns, 1) {
                counts[i] += 1;
            }
        }
        for n in counts {
            assert!((800..1200).contains(&n), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn joining_node_moves_little() {
        let before = nodes(&[("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]);
        let mut after = before.clone();
        after.push(Candidate { node_id: "c2".into(), az: "c".into() });
        let mut moved = 0;
        let n = 3000;
        for c in chunks(n) {
            let p: Vec<_> =
                place(&c, &before, 3).iter().map(|&i| before[i].node_id.clone()).collect();
            let q: Vec<_> =
                place(&c, &after, 3).iter().map(|&i| after[i].node_id.clone()).collect();
            moved += q.iter().filter(|x| !p.contains(x)).count();
        }
        // The new node should take about its share (1/6 of 3n replicas), no more than 2x that.
        assert!(moved <= n, "moved {moved} replicas of {}", 3 * n);
        assert!(moved > 0);
    }
}
