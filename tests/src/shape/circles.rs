//! Import circles: the strongly connected components (Tarjan's algorithm) of
//! the file graph. A component of more than one file is a set of files that
//! all reach each other through imports.

/// Every component of more than one node, each sorted, in a stable order.
pub fn circles(nodes: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Vec<Vec<usize>> {
    let mut adjacent = vec![Vec::new(); nodes];
    for (from, to) in edges {
        adjacent[from].push(to);
    }
    let mut tarjan = Tarjan {
        adjacent,
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in 0..nodes {
        if tarjan.index[node].is_none() {
            tarjan.connect(node);
        }
    }
    let mut found: Vec<Vec<usize>> = tarjan.found.into_iter().filter(|c| c.len() > 1).collect();
    found.iter_mut().for_each(|c| c.sort_unstable());
    found.sort();
    found
}

struct Tarjan {
    adjacent: Vec<Vec<usize>>,
    /// The order in which the search reached each node.
    index: Vec<Option<usize>>,
    /// The lowest index reachable from the node through the search stack.
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    found: Vec<Vec<usize>>,
}

impl Tarjan {
    /// Searches from `node`; pops a component once `node` turns out to be its root.
    fn connect(&mut self, node: usize) {
        self.index[node] = Some(self.next);
        self.low[node] = self.next;
        self.next += 1;
        self.stack.push(node);
        self.on_stack[node] = true;
        for i in 0..self.adjacent[node].len() {
            let next = self.adjacent[node][i];
            match self.index[next] {
                None => {
                    self.connect(next);
                    self.low[node] = self.low[node].min(self.low[next]);
                }
                Some(index) if self.on_stack[next] => self.low[node] = self.low[node].min(index),
                Some(_) => {}
            }
        }
        if self.index[node] == Some(self.low[node]) {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack[member] = false;
                component.push(member);
                if member == node {
                    break;
                }
            }
            self.found.push(component);
        }
    }
}
