//! The CUDA backend of a build without the `cuda` feature (candle's dummy backend): the same
//! API, [`Cuda::open`] answers [`Error::NotCompiledWithCuda`], and since no `Cuda` value can
//! exist, every other method is unreachable by construction (an empty match, not a panic).

use core::convert::Infallible;

use super::{Backend, Device, HostLinear};
use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::attention::AttnShape;
use crate::tensor::Weight;

/// No GPU support compiled in: this type has no values.
pub enum Cuda {}

impl Cuda {
    /// Always [`Error::NotCompiledWithCuda`].
    pub fn open(_ordinal: usize) -> Result<Cuda> {
        Err(Error::NotCompiledWithCuda)
    }

    /// Always 0.
    pub fn device_count() -> usize {
        0
    }

    pub fn with_tf32(self, _on: bool) -> Cuda {
        match self {}
    }
}

impl Backend for Cuda {
    type Tensor = Infallible;
    type Linear = Infallible;
    type KvCache = Infallible;
    type Inputs = Infallible;

    fn device(&self) -> Device {
        match *self {}
    }
    fn upload(&self, _: &[f32]) -> Result<Infallible> {
        match *self {}
    }
    fn upload_linear(&self, _: HostLinear, _: Option<Weight>) -> Result<Infallible> {
        match *self {}
    }
    fn kv_cache(&self, _: usize, _: usize, _: usize, _: usize) -> Result<Infallible> {
        match *self {}
    }
    fn inputs(&self, _: &[usize], _: &[bool]) -> Result<Infallible> {
        match *self {}
    }
    fn embedding(&self, _: &Infallible, _: &[u32], _: usize) -> Result<Infallible> {
        match *self {}
    }
    fn rmsnorm(&self, _: &Infallible, _: &Infallible, _: usize, _: f32) -> Result<Infallible> {
        match *self {}
    }
    fn linear(&self, _: &Infallible, _: &Infallible, _: usize) -> Result<Infallible> {
        match *self {}
    }
    fn head_norm_rope(
        &self,
        _: &mut Infallible,
        _: Option<&Infallible>,
        _: &Infallible,
        _: &Infallible,
        _: usize,
        _: usize,
        _: f32,
    ) -> Result<()> {
        match *self {}
    }
    fn kv_write(
        &self,
        _: &mut Infallible,
        _: &Infallible,
        _: &Infallible,
        _: usize,
        _: usize,
    ) -> Result<()> {
        match *self {}
    }
    fn attention(
        &self,
        _: &Infallible,
        _: &Infallible,
        _: &Infallible,
        _: &AttnShape,
        _: usize,
        _: f32,
    ) -> Result<Infallible> {
        match *self {}
    }
    fn cross_attention(
        &self,
        _: &Infallible,
        _: &Infallible,
        _: &Infallible,
        _: &[usize],
        _: &AttnShape,
        _: f32,
    ) -> Result<Infallible> {
        match *self {}
    }
    fn add(&self, _: &mut Infallible, _: &Infallible) -> Result<()> {
        match *self {}
    }
    fn scale(&self, _: &mut Infallible, _: f32) -> Result<()> {
        match *self {}
    }
    fn layernorm(
        &self,
        _: &mut Infallible,
        _: &Infallible,
        _: &Infallible,
        _: usize,
        _: f32,
    ) -> Result<()> {
        match *self {}
    }
    fn act(&self, _: &mut Infallible, _: Activation) -> Result<()> {
        match *self {}
    }
    fn glu(&self, _: &mut Infallible, _: &Infallible, _: Activation) -> Result<()> {
        match *self {}
    }
    fn last_positions(&self, _: Infallible, _: usize, _: usize, _: usize) -> Result<Infallible> {
        match *self {}
    }
    fn to_host(&self, _: Infallible) -> Result<Vec<f32>> {
        match *self {}
    }
    fn reorder(&self, _: &mut Infallible, _: &[usize]) -> Result<()> {
        match *self {}
    }
}
