//! A contiguous f32 tensor on the host (row-major; images are NCHW).

use crate::error::{Error, Result};
use crate::shape::Shape;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; the data length must equal the element count.
    pub fn new(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        let n = shape
            .checked_numel()
            .ok_or_else(|| Error::TooLarge(shape.clone()))?;
        if n != data.len() {
            return Err(Error::shape(
                "Tensor::new",
                format!("shape {shape} holds {n} elements, data has {}", data.len()),
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: impl Into<Shape>) -> Result<Self> {
        Self::full(shape, 0.0)
    }

    pub fn full(shape: impl Into<Shape>, value: f32) -> Result<Self> {
        let shape = shape.into();
        let n = shape
            .checked_numel()
            .ok_or_else(|| Error::TooLarge(shape.clone()))?;
        Ok(Tensor {
            shape,
            data: vec![value; n],
        })
    }

    /// A rank-0-like scalar, stored with shape [1].
    pub fn scalar(value: f32) -> Self {
        Tensor {
            shape: Shape(vec![1]),
            data: vec![value],
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data.as_slice() {
            [v] => Ok(*v),
            _ => Err(Error::shape(
                "Tensor::item",
                format!("expected one element, shape is {}", self.shape),
            )),
        }
    }

    /// Dimensions of a rank-4 tensor, with an error naming `op` otherwise.
    pub fn dims4(&self, op: &'static str) -> Result<[usize; 4]> {
        self.shape
            .dims4()
            .ok_or_else(|| Error::shape(op, format!("expected NCHW (rank 4), got {}", self.shape)))
    }

    /// Dimensions of a rank-2 tensor, with an error naming `op` otherwise.
    pub fn dims2(&self, op: &'static str) -> Result<[usize; 2]> {
        self.shape
            .dims2()
            .ok_or_else(|| Error::shape(op, format!("expected rank 2, got {}", self.shape)))
    }

    /// The same data under another shape with the same element count.
    pub fn reshaped(self, shape: impl Into<Shape>) -> Result<Self> {
        Tensor::new(shape, self.data)
    }

    /// Elementwise in-place sum `self += other` (same shape).
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::shape(
                "Tensor::add_assign",
                format!("{} vs {}", self.shape, other.shape),
            ));
        }
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += *b;
        }
        Ok(())
    }
}
