use crate::rewrite::rewrite;
use rgnn_ir::{IrError, Op, Program};

/// Merge values computed twice by the same operator from the same operands (e.g. two
/// `compact_gather src x` left behind by linear reordering), so each is computed once.
pub fn merge_common_values(program: &Program) -> Result<Program, IrError> {
    let mut seen: Vec<(Op, rgnn_ir::ValueId)> = vec![];
    rewrite(
        program,
        |_| true,
        |r, v| {
            let op = r.src.op(v);
            if matches!(op, Op::Input { .. }) {
                return Ok(None);
            }
            let mapped = op.map_inputs(|x| r.get(x));
            if let Some((_, existing)) = seen.iter().find(|(o, _)| *o == mapped) {
                return Ok(Some(*existing));
            }
            let new = r.b.push_op(&mapped)?;
            seen.push((mapped, new));
            Ok(Some(new))
        },
    )
}
