//! `rgnn demo` (filled in below).
pub fn run() -> Result<(), rgnn_runtime::RuntimeError> {
    Ok(())
}
