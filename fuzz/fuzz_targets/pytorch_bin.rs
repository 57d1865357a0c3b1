//! pytorch_model.bin (torch zip + restricted unpickler + tensor views): never a panic,
//! never an allocation sized by an unchecked header field.
#![no_main]
use std::sync::Arc;

use dsum_core::io::pytorch::PtCheckpoint;
use dsum_core::io::raw_tensor::TensorSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = PtCheckpoint::from_bytes("pytorch_model.bin", Arc::new(data.to_vec())) else {
        return;
    };
    for name in ck.tensor_names() {
        if let Some(t) = ck.get(&name) {
            let _ = t.to_weight("pytorch_model.bin", &name);
        }
        let _ = ck.raw_tensor(&name);
    }
    let _ = ck.into_checkpoint();
});
