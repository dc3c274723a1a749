//! Program rewriting: walk a program in order and re-emit each value through a fresh builder,
//! letting a rule replace a value by new operators. The builder re-validates everything, so a
//! rewrite cannot produce a malformed program.

use rgnn_ir::{IrError, Op, Program, ProgramBuilder, ValueId};

pub(crate) struct Rewrite<'p> {
    pub src: &'p Program,
    pub b: ProgramBuilder,
    map: Vec<Option<ValueId>>,
    /// How many operators (and outputs) read each source value.
    pub uses: Vec<usize>,
}

impl<'p> Rewrite<'p> {
    fn new(src: &'p Program) -> Self {
        let mut uses = vec![0; src.ops().len()];
        for op in src.ops() {
            for v in op.inputs() {
                uses[v.0] += 1;
            }
        }
        for (_, v) in src.outputs() {
            uses[v.0] += 1;
        }
        Rewrite { src, b: ProgramBuilder::with_params_of(src), map: vec![None; src.ops().len()], uses }
    }

    /// The new id of an already-emitted source value.
    pub fn get(&self, v: ValueId) -> ValueId {
        self.map[v.0].expect("operands are emitted before their users")
    }

    /// Emit source value `v` unchanged (operands remapped).
    fn copy(&mut self, v: ValueId) -> Result<ValueId, IrError> {
        let info = self.src.value(v).clone();
        let new = match self.src.op(v) {
            Op::Input { name } => self.b.input(name, info.domain, info.shape)?,
            op => {
                let op = op.map_inputs(|x| self.get(x));
                self.b.push_op(&op)?
            }
        };
        if !info.name.starts_with('%') {
            self.b.name(new, info.name);
        }
        Ok(new)
    }
}

/// Rewrite `src`: for each value in order, `rule` may emit replacement operators and return the
/// new value, or return `None` to keep the value as it is. `keep` decides which values are
/// emitted at all (dead-value elimination).
pub(crate) fn rewrite(
    src: &Program,
    keep: impl Fn(ValueId) -> bool,
    mut rule: impl FnMut(&mut Rewrite, ValueId) -> Result<Option<ValueId>, IrError>,
) -> Result<Program, IrError> {
    let mut r = Rewrite::new(src);
    for i in 0..src.ops().len() {
        let v = ValueId(i);
        if !keep(v) {
            continue;
        }
        let new = match rule(&mut r, v)? {
            Some(n) => {
                let name = &src.value(v).name;
                if !name.starts_with('%') {
                    r.b.name(n, name.clone());
                }
                n
            }
            None => r.copy(v)?,
        };
        r.map[i] = Some(new);
    }
    for (name, v) in src.outputs() {
        let new = r.get(*v);
        r.b.output(name, new)?;
    }
    Ok(r.b.finish())
}
