//! Checkpoint bookkeeping: every weight a builder asks for is checked against the checkpoint's
//! shapes, and every checkpoint key must be used or explicitly accepted.

use crate::{LayerConfig, ModelError};
use rgnn_ir::{ParamId, ProgramBuilder};
use std::collections::{BTreeMap, BTreeSet};

/// Shapes of the checkpoint's tensors, by full key.
pub type WeightShapes = BTreeMap<String, Vec<usize>>;

pub(crate) struct Weights<'a> {
    shapes: &'a WeightShapes,
    used: BTreeSet<String>,
}

impl<'a> Weights<'a> {
    pub fn new(shapes: &'a WeightShapes) -> Self {
        Weights { shapes, used: BTreeSet::new() }
    }

    /// A required weight `<prefix>.<name>` of exactly `expected` shape.
    pub fn load(&mut self, b: &mut ProgramBuilder, layer: &LayerConfig, name: &str, expected: &[usize]) -> Result<ParamId, ModelError> {
        let key = layer.key(name);
        let found = self.shapes.get(&key).ok_or_else(|| ModelError::MissingWeight {
            layer: layer.label(),
            key: key.clone(),
            expected: expected.to_vec(),
        })?;
        if found.as_slice() != expected {
            return Err(ModelError::WrongShape { layer: layer.label(), key, expected: expected.to_vec(), found: found.clone() });
        }
        self.used.insert(key.clone());
        b.load_param(&key, expected).map_err(|e| ir(layer, e))
    }

    /// Accept a weight if it is present, without using it (e.g. RGAT's `mod` parameters).
    pub fn accept(&mut self, layer: &LayerConfig, name: &str) {
        let key = layer.key(name);
        if self.shapes.contains_key(&key) {
            self.used.insert(key);
        }
    }

    /// Every checkpoint key that no layer used.
    pub fn finish(self) -> Result<(), ModelError> {
        let keys: Vec<String> = self.shapes.keys().filter(|k| !self.used.contains(*k)).cloned().collect();
        if keys.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedWeights { keys })
        }
    }
}

pub(crate) fn ir(layer: &LayerConfig, error: rgnn_ir::IrError) -> ModelError {
    ModelError::Ir { layer: layer.label(), error }
}
