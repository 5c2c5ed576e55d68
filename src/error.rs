//! The crate's one error type.

use std::fmt;

/// What went wrong, with the operation and every shape involved.
///
/// Every fallible function in the crate checks its inputs before it writes anything, so after an
/// error all outputs, and a layer's parameters, gradients and cache, are exactly as they were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffineError {
    /// Operand shapes do not fit together. `detail` names every shape involved.
    Shape {
        /// The operation that refused its inputs (`"forward"`, `"backward"`, …).
        op: &'static str,
        /// All shapes involved, and which relation between them is broken.
        detail: String,
    },
    /// `backward` was called on a layer that has not run `forward` yet, so it has no cached input.
    BackwardBeforeForward,
    /// A dimension or stride does not fit BLAS's 32-bit (`i32`) index.
    TooLargeForBlas {
        /// The operation that refused its inputs.
        op: &'static str,
        /// The offending operand and its shape.
        detail: String,
    },
    /// A constructor argument is invalid (a zero or oversized dimension, a non-finite scale).
    InvalidArgument(String),
    /// A file could not be read or written (the message names it and says why).
    Io(String),
}

impl fmt::Display for AffineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AffineError::Shape { op, detail } => write!(f, "affine {op}: shape mismatch: {detail}"),
            AffineError::BackwardBeforeForward => write!(
                f,
                "affine backward: no cached input; call forward before backward"
            ),
            AffineError::TooLargeForBlas { op, detail } => write!(
                f,
                "affine {op}: {detail} exceeds BLAS's 32-bit index limit ({})",
                i32::MAX
            ),
            AffineError::InvalidArgument(msg) => write!(f, "affine: invalid argument: {msg}"),
            AffineError::Io(msg) => write!(f, "affine: {msg}"),
        }
    }
}

impl std::error::Error for AffineError {}

/// Shorthand for this crate's results.
pub type Result<T, E = AffineError> = std::result::Result<T, E>;

/// Formats a 2-D shape as `rows × cols`.
pub(crate) fn fmt2((r, c): (usize, usize)) -> String {
    format!("{r} × {c}")
}
