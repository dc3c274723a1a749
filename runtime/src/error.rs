use thiserror::Error;

/// Everything that can go wrong between files on disk and outputs in hand. Messages name the
/// file, tensor and position involved.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is not a valid safetensors file: {message}")]
    Corrupt { path: String, message: String },
    #[error("{path}: {message}")]
    BadTensor { path: String, message: String },
    #[error("{path}: {error}")]
    Model { path: String, error: rgnn_models::ModelError },
    #[error("graph does not fit the model: {0}")]
    Mismatch(String),
    #[error("backend `{backend}` is not available: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("{backend} device error: {message}")]
    Device { backend: String, message: String },
    #[error("{backend}: out of memory: {message}")]
    OutOfMemory { backend: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
