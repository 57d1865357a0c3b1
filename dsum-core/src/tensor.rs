//! Plain f32 tensors for activations.
