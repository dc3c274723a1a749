//! Memory planning v1: each intermediate buffer gets an offset in one arena so that buffers whose
//! lifetimes overlap never share bytes. Placement is best fit (the smallest gap between
//! already-placed, overlapping buffers that holds it), as TFLite's and XLA's planners do, over a
//! few greedy orders (largest first, earliest first, ...) and seeded shuffles; the best wins.
//! Graph inputs and program outputs outlive a run and live in a separate persistent pool.

use rgnn_ir::level2::{BufferRole, KernelProgram};
use rgnn_ir::Domain;

/// Buffers are placed at multiples of this many bytes (GPU-friendly).
pub const ALIGNMENT: usize = 256;

/// Where every buffer lives and what that costs.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Bytes of each buffer (rows × width × dtype, aligned).
    pub sizes: Vec<usize>,
    /// Arena offset of each intermediate buffer; `None` for the persistent pool.
    pub offsets: Vec<Option<usize>>,
    /// Bytes of the persistent pool (inputs and outputs).
    pub persistent_bytes: usize,
    /// Every intermediate in its own allocation, none freed.
    pub naive_bytes: usize,
    /// The most intermediate bytes alive at any one kernel: no plan can do better.
    pub lower_bound_bytes: usize,
    /// The arena size this plan needs.
    pub planned_bytes: usize,
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Plan `kp` for a graph with `rows(domain)` rows per domain.
pub fn plan_memory(kp: &KernelProgram, rows: impl Fn(Domain) -> usize) -> MemoryPlan {
    let sizes: Vec<usize> = kp.buffers.iter().map(|b| align(rows(b.domain) * b.width * b.dtype.bytes())).collect();
    let is_arena = |i: usize| kp.buffers[i].role == BufferRole::Intermediate;
    let overlaps = |a: usize, b: usize| {
        let (x, y) = (kp.buffers[a].lifetime, kp.buffers[b].lifetime);
        x.0 <= y.1 && y.0 <= x.1
    };
    let arena: Vec<usize> = (0..sizes.len()).filter(|&i| is_arena(i)).collect();
    let naive_bytes = arena.iter().map(|&i| sizes[i]).sum();
    let persistent_bytes = (0..sizes.len()).filter(|&i| !is_arena(i)).map(|i| sizes[i]).sum();
    let lower_bound_bytes = (0..kp.kernels.len().max(1))
        .map(|t| {
            arena.iter().filter(|&&i| kp.buffers[i].lifetime.0 <= t && t <= kp.buffers[i].lifetime.1).map(|&i| sizes[i]).sum::<usize>()
        })
        .max()
        .unwrap_or(0);

    // Largest-first best fit, tried with a few tie-breaking orders; the smallest arena wins.
    let place = |order: &[usize]| -> (Vec<Option<usize>>, usize) {
        let mut offsets: Vec<Option<usize>> = vec![None; sizes.len()];
        let mut placed: Vec<usize> = vec![];
        for &i in order {
            // Occupied ranges of placed buffers alive at the same time, by offset.
            let mut busy: Vec<(usize, usize)> =
                placed.iter().filter(|&&j| overlaps(i, j)).map(|&j| (offsets[j].unwrap(), offsets[j].unwrap() + sizes[j])).collect();
            busy.sort();
            let (mut best, mut cursor) = (None::<(usize, usize)>, 0usize);
            for &(start, end) in &busy {
                if start >= cursor + sizes[i] {
                    let gap = start - cursor;
                    if best.is_none_or(|(_, g)| gap < g) {
                        best = Some((cursor, gap));
                    }
                }
                cursor = cursor.max(end);
            }
            offsets[i] = Some(best.map_or(cursor, |(o, _)| o));
            placed.push(i);
        }
        let peak = order.iter().map(|&i| offsets[i].unwrap() + sizes[i]).max().unwrap_or(0);
        (offsets, peak)
    };
    let life = |i: usize| kp.buffers[i].lifetime;
    let duration = |i: usize| life(i).1 - life(i).0 + 1;
    let mut orders: Vec<Vec<usize>> = vec![arena.clone(); 4];
    orders[0].sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), life(i).0));
    orders[1].sort_by_key(|&i| (life(i).0, std::cmp::Reverse(sizes[i])));
    orders[2].sort_by_key(|&i| (std::cmp::Reverse(duration(i)), std::cmp::Reverse(sizes[i])));
    orders[3].sort_by_key(|&i| (std::cmp::Reverse(sizes[i] * duration(i)), life(i).0));
    // Greedy orders can trap a large, short-lived buffer low in the arena; a few deterministic
    // shuffles (a tiny xorshift, so plans are reproducible) escape most such traps cheaply.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..64 {
        let mut o = arena.clone();
        for k in (1..o.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            o.swap(k, (state % (k as u64 + 1)) as usize);
        }
        orders.push(o);
    }
    let (offsets, _) = orders.iter().map(|o| place(o)).min_by_key(|(_, peak)| *peak).expect("at least one order");
    let planned_bytes = arena.iter().map(|&i| offsets[i].unwrap() + sizes[i]).max().unwrap_or(0);
    MemoryPlan { sizes, offsets, persistent_bytes, naive_bytes, lower_bound_bytes, planned_bytes }
}

impl MemoryPlan {
    /// Check that no two buffers alive at the same time share a byte.
    pub fn is_valid(&self, kp: &KernelProgram) -> bool {
        let n = self.sizes.len();
        (0..n).all(|a| {
            (0..n).all(|b| {
                let (Some(x), Some(y)) = (self.offsets[a], self.offsets[b]) else { return true };
                let (la, lb) = (kp.buffers[a].lifetime, kp.buffers[b].lifetime);
                a == b || la.1 < lb.0 || lb.1 < la.0 || x + self.sizes[a] <= y || y + self.sizes[b] <= x
            })
        })
    }

    /// The `inspect --memory` report.
    pub fn to_text(&self, kp: &KernelProgram) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{:<24} {:<18} {:>5} {:>12} {:>9}  placement", "tensor", "materialisation", "dtype", "bytes", "lifetime");
        for (i, b) in kp.buffers.iter().enumerate() {
            let mat = match b.domain {
                Domain::Node(None) => "dense per node".to_string(),
                Domain::Node(Some(t)) => format!("per node of {}", kp.node_types.get(t.0).map_or("?", String::as_str)),
                Domain::Edge => "per edge".into(),
                Domain::CompactSrcRel => "compact (src, rel)".into(),
                Domain::CompactDstRel => "compact (dst, rel)".into(),
                Domain::Pair => "per pair".into(),
                Domain::Graph => "per graph".into(),
            };
            let place = match (&b.role, self.offsets[i]) {
                (BufferRole::Input(_), _) => "persistent (input)".to_string(),
                (BufferRole::Output(_), _) => "persistent (output)".to_string(),
                (_, Some(o)) => format!("arena @ {o}"),
                _ => "?".into(),
            };
            let _ = writeln!(
                s,
                "{:<24} {:<18} {:>5} {:>12} {:>4}..{:<4}  {place}",
                b.name,
                mat,
                format!("{:?}", b.dtype).to_lowercase(),
                self.sizes[i],
                b.lifetime.0,
                b.lifetime.1
            );
        }
        let fused = kp.materialization.iter().filter(|m| matches!(m, rgnn_ir::level2::Materialization::Fused)).count();
        let _ = writeln!(s, "{fused} level-1 values fused away (never stored)");
        let _ = writeln!(s, "naive total (every intermediate kept): {:>12} bytes", self.naive_bytes);
        let _ = writeln!(s, "liveness lower bound:                  {:>12} bytes", self.lower_bound_bytes);
        let ratio = if self.lower_bound_bytes == 0 { 1.0 } else { self.planned_bytes as f64 / self.lower_bound_bytes as f64 };
        let _ = writeln!(s, "planned arena peak:                    {:>12} bytes ({ratio:.3} x the lower bound)", self.planned_bytes);
        let _ = writeln!(s, "persistent pool (inputs, outputs):     {:>12} bytes", self.persistent_bytes);
        s
    }
}
