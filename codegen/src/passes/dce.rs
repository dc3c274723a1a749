use crate::rewrite::rewrite;
use rgnn_ir::{IrError, Program, ValueId};

/// Drop every value no output depends on. Parameters are kept (ids stay stable).
pub fn eliminate_dead_values(program: &Program) -> Result<Program, IrError> {
    let mut live = vec![false; program.ops().len()];
    for (_, v) in program.outputs() {
        live[v.0] = true;
    }
    for i in (0..program.ops().len()).rev() {
        if live[i] {
            for v in program.ops()[i].inputs() {
                live[v.0] = true;
            }
        }
    }
    rewrite(program, |v: ValueId| live[v.0], |_, _| Ok(None))
}
