//! Weight storage: f32 views borrowed from a mapped (or loaded) checkpoint when the bytes
//! are f32 and aligned, otherwise converted once from f16/bf16 into an owned buffer.
//! Activations are plain `Vec<f32>` with their shapes written in comments (llm.c style).

use std::ops::Deref;
use std::sync::Arc;

/// Bytes that back a checkpoint: a memory map or an in-memory file (browser).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

enum Buf {
    /// Reference-counted so a decoded tensor can be handed out without copying.
    Owned(Arc<[f32]>),
    /// `len` f32 values starting at byte `offset` of `bytes` (checked 4-aligned at creation).
    Shared {
        bytes: SharedBytes,
        offset: usize,
        len: usize,
    },
}

/// A read-only f32 tensor with its shape (row-major).
pub struct Weight {
    pub shape: Vec<usize>,
    buf: Buf,
}

impl Weight {
    pub fn from_vec(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Weight {
            shape,
            buf: Buf::Owned(data.into()),
        }
    }

    /// Borrow `len` f32s at `offset` of `bytes` without copying; `None` if misaligned or out of range.
    pub fn from_shared(shape: Vec<usize>, bytes: SharedBytes, offset: usize) -> Option<Self> {
        let len: usize = shape.iter().product();
        let all = (*bytes).as_ref();
        let end = offset.checked_add(len.checked_mul(4)?)?;
        if end > all.len()
            || !(all.as_ptr() as usize + offset).is_multiple_of(core::mem::align_of::<f32>())
        {
            return None;
        }
        Some(Weight {
            shape,
            buf: Buf::Shared { bytes, offset, len },
        })
    }

    /// A second handle on the same data (shared bytes are not copied; owned data is).
    pub fn clone_view(&self) -> Self {
        match &self.buf {
            Buf::Owned(v) => Weight {
                shape: self.shape.clone(),
                buf: Buf::Owned(v.clone()),
            },
            Buf::Shared { bytes, offset, len } => Weight {
                shape: self.shape.clone(),
                buf: Buf::Shared {
                    bytes: bytes.clone(),
                    offset: *offset,
                    len: *len,
                },
            },
        }
    }

    pub fn is_borrowed(&self) -> bool {
        matches!(self.buf, Buf::Shared { .. })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Deref for Weight {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.buf {
            Buf::Owned(v) => v,
            Buf::Shared { bytes, offset, len } => {
                let b = &(**bytes).as_ref()[*offset..*offset + *len * 4];
                bytemuck::cast_slice(b)
            }
        }
    }
}

impl core::fmt::Debug for Weight {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Weight{:?}", self.shape)
    }
}
