//! What goes wrong on the local platform, said so a person knows what to do: its own
//! file, below everything that reports it (the operator, `apply`).

use std::path::PathBuf;

/// A local platform failure, said so a person knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The manifest is not valid.
    #[error("the manifest is not valid; nothing was started:\n{0}")]
    Invalid(String),
    /// A file could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else, with the reason.
    #[error("{0}")]
    Other(String),
}
