//! A bitsandbytes 4-bit checkpoint (safetensors with `W`, `W.absmax`, `W.quant_map`,
//! `W.nested_*` and the `W.quant_state.bitsandbytes__nf4` JSON): reading every NF4 weight it
//! names either fails with an error or gives a tensor that dequantizes.
#![no_main]
use std::sync::Arc;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::quant::bnb_state::{from_bnb, nf4_weight_names};
use dsum_core::tensor::SharedBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes: SharedBytes = Arc::new(data.to_vec());
    let Ok(ck) = Checkpoint::from_files(vec![("model.safetensors".into(), bytes)]) else {
        return;
    };
    let names: Vec<String> = ck.names().map(String::from).collect();
    for w in nf4_weight_names(names.iter().map(|s| s.as_str())) {
        if let Ok(t) = from_bnb(&ck, &w) {
            // Bounded: the reader checked every size against the stored shape.
            if t.numel() <= 1 << 22 {
                let _ = t.dequantize();
            }
        }
    }
});
