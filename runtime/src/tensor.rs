/// A dense host tensor of f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor { shape, data: vec![0.0; n] }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// Rows (first axis) and row width (product of the rest); a scalar is one row of one.
    pub fn rows_width(&self) -> (usize, usize) {
        match self.shape.split_first() {
            None => (1, 1),
            Some((r, rest)) => (*r, rest.iter().product()),
        }
    }
    pub fn row(&self, i: usize) -> &[f32] {
        let (_, w) = self.rows_width();
        &self.data[i * w..(i + 1) * w]
    }
}
