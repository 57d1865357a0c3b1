//! The competition CSV reader on arbitrary bytes: never a panic, and every row it accepts
//! has exactly the header's width.
#![no_main]
use dsum_core::io::csv::Table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Table::parse("fuzz.csv", data) else {
        return;
    };
    let width = t.headers().len();
    for col in 0..width {
        let _ = t.check_unique(col);
    }
    for row in t.rows() {
        let _ = row.line();
        for col in 0..=width {
            let _ = row.get(col);
        }
    }
    let _ = (
        t.column("fname"),
        t.column("dialogue"),
        t.find_column("summary"),
    );
});
