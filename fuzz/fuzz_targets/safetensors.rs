//! safetensors headers and tensor reads: never a panic, never an allocation larger than the
//! file (a header may claim any length, shape or offset).
#![no_main]
use std::sync::Arc;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::raw_tensor::TensorSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ck) = Checkpoint::from_files(vec![("fuzz.safetensors".into(), Arc::new(data.to_vec()))])
    else {
        return;
    };
    let names: Vec<String> = ck.names().map(String::from).collect();
    for name in names {
        let shape = ck.shape(&name).map(|s| s.to_vec()).unwrap_or_default();
        let _ = ck.get(&name, &shape);
        let _ = ck.get(&name, &[1]);
        let _ = ck.raw_tensor(&name);
    }
});
