use thiserror::Error;

/// A model file that cannot be turned into a program. Messages name the layer, the key and,
/// for weights, the expected and found shapes.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("model config: {0}")]
    Config(String),
    #[error("{layer}: {message}")]
    Layer { layer: String, message: String },
    #[error("{layer}: missing weight `{key}` (expected shape {expected:?})")]
    MissingWeight { layer: String, key: String, expected: Vec<usize> },
    #[error("{layer}: weight `{key}` has shape {found:?}, expected {expected:?}")]
    WrongShape { layer: String, key: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("unexpected weight{}: {}", if .keys.len() > 1 { "s" } else { "" }, .keys.join(", "))]
    UnexpectedWeights { keys: Vec<String> },
    #[error("{layer}: internal program error: {error}")]
    Ir { layer: String, error: rgnn_ir::IrError },
}
