//! Runtime tensor shapes (row-major, NCHW for images).

use std::fmt;

/// A tensor shape: a list of dimensions, outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements, or `None` when the product overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
    /// Number of elements. Shapes held by tensors were checked on creation.
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// The dimensions of a rank-4 (NCHW) shape, or `None` for another rank.
    pub fn dims4(&self) -> Option<[usize; 4]> {
        <[usize; 4]>::try_from(self.0.as_slice()).ok()
    }
    /// The dimensions of a rank-2 (rows × columns) shape, or `None` for another rank.
    pub fn dims2(&self) -> Option<[usize; 2]> {
        <[usize; 2]>::try_from(self.0.as_slice()).ok()
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
