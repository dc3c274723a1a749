//! safetensors files: reading (memory-mapped, every dtype and shape checked, never a panic on
//! bad bytes) and writing outputs.

use crate::{Result, RuntimeError, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A safetensors file's bytes, memory-mapped or owned.
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// A parsed safetensors file: names, dtypes, shapes and the `__metadata__` map.
pub struct TensorFile {
    pub path: String,
    bytes: FileBytes,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path_ref = path.as_ref();
        let path = path_ref.display().to_string();
        let file = std::fs::File::open(path_ref).map_err(|error| RuntimeError::Io { path: path.clone(), error })?;
        // SAFETY: the map is read-only; a file truncated while mapped is outside what we guard.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|error| RuntimeError::Io { path: path.clone(), error })?;
        Self::from_bytes(path, FileBytes::Mapped(mmap))
    }

    /// Parse in-memory bytes (`name` is used in messages).
    pub fn from_bytes(name: impl Into<String>, bytes: FileBytes) -> Result<Self> {
        let path = name.into();
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| RuntimeError::Corrupt { path: path.clone(), message: e.to_string() })?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        SafeTensors::deserialize(&bytes).map_err(|e| RuntimeError::Corrupt { path: path.clone(), message: e.to_string() })?;
        Ok(TensorFile { path, bytes, metadata })
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in from_bytes")
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.st().names().into_iter().map(str::to_string).collect();
        n.sort();
        n
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st().tensor(name).ok().map(|t| t.shape().to_vec())
    }

    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.st().tensor(name).ok().map(|t| t.dtype())
    }

    fn bad(&self, message: String) -> RuntimeError {
        RuntimeError::BadTensor { path: self.path.clone(), message }
    }

    /// A float tensor (F32, F16, BF16, F64) as f32.
    pub fn floats(&self, name: &str) -> Result<Tensor> {
        let st = self.st();
        let t = st.tensor(name).map_err(|_| self.bad(format!("tensor `{name}` is missing")))?;
        let b = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            other => return Err(self.bad(format!("tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        Ok(Tensor::new(t.shape().to_vec(), data))
    }

    /// An integer index tensor (I64, I32, and U8/I16/U16/U32 for convenience) as i64.
    pub fn ints(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let st = self.st();
        let t = st.tensor(name).map_err(|_| self.bad(format!("tensor `{name}` is missing")))?;
        let b = t.data();
        let data: Vec<i64> = match t.dtype() {
            Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect(),
            Dtype::U32 => b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as i64).collect(),
            Dtype::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            Dtype::U16 => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            Dtype::U8 | Dtype::BOOL => b.iter().map(|&x| x as i64).collect(),
            Dtype::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            other => {
                return Err(
                    self.bad(format!("tensor `{name}` has dtype {other:?}; expected an integer dtype (I64, I32; U8 or BOOL for masks)"))
                )
            }
        };
        Ok((t.shape().to_vec(), data))
    }
}

/// Write named f32 tensors (and optional metadata) as a safetensors file.
pub fn write_tensors(path: impl AsRef<Path>, tensors: &[(String, Tensor)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let path = path.as_ref();
    let err = |message: String| RuntimeError::Write { path: path.display().to_string(), message };
    let bytes: BTreeMap<&str, Vec<u8>> =
        tensors.iter().map(|(n, t)| (n.as_str(), bytemuck::cast_slice::<f32, u8>(&t.data).to_vec())).collect();
    let mut views = vec![];
    for (n, t) in tensors {
        let v = safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), &bytes[n.as_str()]).map_err(|e| err(e.to_string()))?;
        views.push((n.clone(), v));
    }
    // Written in place, as `cp` or `torch.save` would: through a symlink to its target, keeping
    // an existing file's inode and permissions, new files per the umask, and a full disk or a
    // device reported as the write's error (a temporary file renamed over the path replaced
    // links, pipes and device nodes with regular files).
    let serialized = safetensors::serialize(views, metadata).map_err(|e| err(e.to_string()))?;
    std::fs::write(path, serialized).map_err(|e| err(e.to_string()))
}
