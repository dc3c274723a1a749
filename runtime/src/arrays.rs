//! Where a generated GPU program's arrays live, shared by the device backends: the memory
//! plan's arena for intermediates, and allocations of their own for inputs, outputs, parameters,
//! index arrays, per-dispatch tables and scratch.

use crate::graph::ExecGraph;
use crate::{Result, RuntimeError, Tensor};
use rgnn_ir::level2::{BufferRole, DType, KernelProgram};
use rgnn_kernels::cpu::GraphIndex;
use rgnn_kernels::gpu::{ArrayRef, Dispatch, IndexArray};
use std::collections::HashMap;

/// Index arrays hold offsets as u32 on the device.
fn check_u32_offsets(ix: IndexArray, index: &GraphIndex) -> Result<()> {
    let too_big = match ix {
        IndexArray::SegPtr => index.seg_ptr.last().is_some_and(|&x| x > u32::MAX as usize),
        IndexArray::NodeSegPtr => index.node_seg_ptr.last().is_some_and(|&x| x > u32::MAX as usize),
        _ => false,
    };
    if too_big {
        return Err(RuntimeError::Invalid(format!("index array `{}` has offsets beyond 2^32; the GPU backends index with u32", ix.name())));
    }
    Ok(())
}

/// Where every array of a generated program lives: a list of allocations (what, contents to
/// upload, bytes) and, per array, (allocation, byte offset). Shared by the wgpu and CUDA
/// backends and by the host emulation that tests the generated CUDA C without a GPU.
pub struct ArrayLayout {
    pub uploads: Vec<(String, Vec<u8>, usize)>,
    pub slot_of: HashMap<ArrayRef, (usize, usize)>,
    /// Per dispatch, the allocation of each of its tables.
    pub table_slots: Vec<Vec<usize>>,
    /// (name, allocation, bytes, rows, width) of each output.
    pub outputs_at: Vec<(String, usize, usize, usize, usize)>,
}

impl ArrayLayout {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        plan: &KernelProgram,
        memory: &rgnn_codegen::MemoryPlan,
        dispatches: &[Dispatch],
        scratch_elems: [usize; 2],
        params: &[Tensor],
        graph: &ExecGraph,
        index: &GraphIndex,
        storage: DType,
    ) -> Result<Self> {
        let elem_bytes = storage.bytes();
        let encode = |data: &[f32]| -> Vec<u8> {
            match storage {
                DType::F16 => data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                DType::BF16 => data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                DType::F32 => bytemuck::cast_slice(data).to_vec(),
            }
        };
        let mut uploads: Vec<(String, Vec<u8>, usize)> = vec![];
        let mut slot_of: HashMap<ArrayRef, (usize, usize)> = HashMap::new();
        uploads.push(("the intermediate arena".into(), vec![], memory.planned_bytes.max(256)));
        let mut outputs_at = vec![];
        for (i, b) in plan.buffers.iter().enumerate() {
            let bytes = index.rows(b.domain) * b.width * elem_bytes;
            let id = ArrayRef::Data(rgnn_ir::level2::BufferId(i));
            match (&b.role, memory.offsets[i]) {
                (BufferRole::Intermediate, Some(offset)) => {
                    slot_of.insert(id, (0, offset));
                }
                (BufferRole::Input(name), _) => {
                    let x = graph.inputs.get(name).ok_or_else(|| RuntimeError::Mismatch(format!("the graph has no input `{name}`")))?;
                    slot_of.insert(id, (uploads.len(), 0));
                    uploads.push((format!("input `{name}`"), encode(&x.data), bytes));
                }
                (role, _) => {
                    if let BufferRole::Output(name) = role {
                        outputs_at.push((name.clone(), uploads.len(), bytes, index.rows(b.domain), b.width));
                    }
                    slot_of.insert(id, (uploads.len(), 0));
                    uploads.push((format!("buffer `{}`", b.name), vec![], bytes));
                }
            }
        }
        let mut table_slots: Vec<Vec<usize>> = vec![];
        for d in dispatches {
            for a in d.bindings.iter().map(|b| b.array) {
                if slot_of.contains_key(&a) || matches!(a, ArrayRef::Table(_)) {
                    continue;
                }
                let (what, contents, bytes) = match a {
                    ArrayRef::Param(p) => {
                        let c: Vec<u8> = bytemuck::cast_slice(&params[p.0].data).to_vec();
                        let n = c.len();
                        (format!("parameter {}", p.0), c, n)
                    }
                    ArrayRef::Index(ix) => {
                        check_u32_offsets(ix, index)?;
                        let c: Vec<u8> = bytemuck::cast_slice(&ix.data(index)).to_vec();
                        let n = c.len();
                        (format!("index array `{}`", ix.name()), c, n)
                    }
                    ArrayRef::Scratch(s) => (format!("scratch {s}"), vec![], scratch_elems[s] * 4),
                    ArrayRef::Data(_) | ArrayRef::Table(_) => unreachable!("placed above"),
                };
                slot_of.insert(a, (uploads.len(), 0));
                uploads.push((what, contents, bytes));
            }
            let mut slots = vec![];
            for (t, data) in d.tables.iter().enumerate() {
                slots.push(uploads.len());
                let c: Vec<u8> = bytemuck::cast_slice(data).to_vec();
                let n = c.len();
                uploads.push((format!("table {t} of `{}`", d.label), c, n));
            }
            table_slots.push(slots);
        }
        Ok(ArrayLayout { uploads, slot_of, table_slots, outputs_at })
    }

    /// Allocation and byte offset of array `a` as dispatch `d` binds it.
    pub fn place(&self, a: ArrayRef, d: usize) -> (usize, usize) {
        match a {
            ArrayRef::Table(t) => (self.table_slots[d][t], 0),
            a => self.slot_of[&a],
        }
    }

    /// The address of array `a` of dispatch `d`, given each allocation's base address.
    pub fn address(&self, a: ArrayRef, d: usize, base: &[u64]) -> u64 {
        let (slot, offset) = self.place(a, d);
        base[slot] + offset as u64
    }
}

/// Decode a read-back output.
pub fn decode(bytes: &[u8], storage: DType) -> Vec<f32> {
    match storage {
        DType::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}
