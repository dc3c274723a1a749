//! A model file: the parsed config plus weights (converted to f32 on load).

use crate::io::{FileBytes, TensorFile};
use crate::{Result, RuntimeError, Tensor};
use rgnn_models::{ModelConfig, WeightShapes};
use std::collections::BTreeMap;
use std::path::Path;

/// A loaded `*.model.safetensors`.
#[derive(Clone, Debug)]
pub struct Model {
    /// Where it came from (for messages).
    pub source: String,
    pub config: ModelConfig,
    pub weights: BTreeMap<String, Tensor>,
}

impl Model {
    /// Load a model file; the config is parsed and every tensor read (F32, F16, BF16).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(TensorFile::open(path)?)
    }

    /// Load from bytes held in memory (e.g. `include_bytes!`).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::from_file(TensorFile::from_bytes(name, FileBytes::Owned(bytes))?)
    }

    fn from_file(file: TensorFile) -> Result<Self> {
        let path = file.path.clone();
        let text = file.metadata.get("rgnn.config").ok_or_else(|| RuntimeError::BadTensor {
            path: path.clone(),
            message: "no `rgnn.config` entry in the safetensors metadata; is this a model file written by the rgnn exporter?".into(),
        })?;
        let config = ModelConfig::parse(text).map_err(|error| RuntimeError::Model { path: path.clone(), error })?;
        let mut weights = BTreeMap::new();
        for name in file.names() {
            weights.insert(name.clone(), file.floats(&name)?);
        }
        Ok(Model { source: path, config, weights })
    }

    /// Shapes of every weight, by key.
    pub fn weight_shapes(&self) -> WeightShapes {
        self.weights.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect()
    }
}
