//! The restricted unpickler alone (the zip wrapper hides it from most mutations): data only,
//! allowlisted globals only, never a panic, bounded work and memory.
#![no_main]
use dsum_core::io::pickle::{state_dict, unpickle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = unpickle(data, "data.pkl") {
        let _ = state_dict(&v, "data.pkl");
    }
});
