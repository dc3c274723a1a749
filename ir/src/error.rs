use thiserror::Error;

/// An operator or parameter that does not fit its inputs. The message names the operator and
/// both sides of the mismatch.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    #[error("{op}: value %{value} does not exist")]
    UnknownValue { op: &'static str, value: usize },
    #[error("{op}: parameter ${param} does not exist")]
    UnknownParam { op: &'static str, param: usize },
    #[error("output name {0:?} is used twice")]
    DuplicateOutput(String),
}

impl IrError {
    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        IrError::Invalid { op, message: message.into() }
    }
}
