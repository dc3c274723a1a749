/// Index of a parameter in a [`crate::Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// How a parameter is obtained from the checkpoint. Kept symbolic so that a compiler can see
/// structure (a basis decomposition, a block-diagonal weight) and every number stays traceable
/// to a checkpoint key.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamExpr {
    /// A checkpoint tensor, by its full key.
    Load { key: String },
    /// `out[r] = Σ_b coeff[r, b] · bases[b]`: `coeff [R, B]`, `bases [B, ...]` → `[R, ...]`.
    BasisCompose { coeff: ParamId, bases: ParamId },
    /// Same data, new shape (row-major, element count unchanged).
    Reshape { input: ParamId, shape: Vec<usize> },
    /// Axes reordered: output axis `i` is input axis `axes[i]`.
    Permute { input: ParamId, axes: Vec<usize> },
    /// Parameters of one shape stacked along a new leading axis.
    Stack { inputs: Vec<ParamId> },
    /// Two linears applied in sequence as one: `first [T, B, in/B, mid/B]` (block-diagonal per
    /// type) then `second [1, 1, mid, out]` (shared) → `[T, 1, in, out]`, `first[t] @ second`.
    /// Made by the linear-reordering pass (e.g. RGAT's `W_r @ q`).
    ComposeLinear { first: ParamId, second: ParamId },
}

/// A parameter: its definition and its (validated) shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub expr: ParamExpr,
    pub shape: Vec<usize>,
}

impl ParamDef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
