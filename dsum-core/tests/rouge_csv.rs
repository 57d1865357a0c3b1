//! `io::csv::Table`: good files parse, bad ones fail with the file, the line and the
//! problem in the message, never a panic.
#![cfg(feature = "std")]

use dsum_core::io::csv::Table;
use proptest::prelude::*;

fn err(bytes: &[u8]) -> String {
    match Table::parse("t.csv", bytes) {
        Ok(t) => panic!("expected an error, parsed {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_columns_by_name_with_lines() {
    let t = Table::parse(
        "t.csv",
        "\u{feff}fname,summary\nd1,\"멀티\n라인, \"\"인용\"\"\"\nd2,짧다\n".as_bytes(),
    )
    .expect("parses");
    let (f, s) = (
        t.column("fname").expect("fname"),
        t.column("summary").expect("summary"),
    );
    assert_eq!((t.len(), t.rows().len()), (2, 2));
    let rows: Vec<_> = t.rows().collect();
    assert_eq!(rows[0].get(s), "멀티\n라인, \"인용\"");
    assert_eq!((rows[1].get(f), rows[1].line()), ("d2", 4));
    assert!(t.find_column("topic").is_none());
    t.check_unique(f).expect("unique");
}

#[test]
fn errors_name_file_line_and_problem() {
    let e = Table::parse("t.csv", b"fname,dialogue\nd1,x\n")
        .expect("parses")
        .column("summary");
    let e = e.expect_err("missing").to_string();
    assert!(
        e.contains("t.csv")
            && e.contains("missing column `summary`")
            && e.contains("fname, dialogue"),
        "{e}"
    );

    let e = err(b"fname,summary\nd1,ok\nd2,\xff\xfe\n");
    assert!(
        e.starts_with("t.csv: line 3:") && e.contains("UTF-8"),
        "{e}"
    );

    let e = err(b"fname,summary\nd1,\"never closed\nd2,x\n");
    assert!(e.contains("line 2: quoted field is never closed"), "{e}");

    let e = err(b"fname,summary\nd1,\"a\"b\n");
    assert!(e.contains("line 2: text after the closing quote"), "{e}");

    let e = err(b"fname,summary\nd1,a,b\n");
    assert!(e.contains("line 2: 3 fields, but the header has 2"), "{e}");

    assert!(err(b"").contains("empty file"));
    assert!(err(b"\xEF\xBB\xBF \n\n").contains("empty file"));
    assert!(err(b"a,a\n1,2\n").contains("column `a` appears twice"));

    let t = Table::parse("t.csv", b"fname,s\nd1,a\nd2,b\nd1,c\n").expect("parses");
    let e = t.check_unique(0).expect_err("dup").to_string();
    assert!(e.contains("duplicate fname: `d1` (lines 2 and 4)"), "{e}");

    let e = Table::read(std::path::Path::new("/nonexistent/x.csv"))
        .expect_err("io")
        .to_string();
    assert!(e.starts_with("/nonexistent/x.csv:"), "{e}");
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Table::parse("fuzz.csv", &bytes);
    }

    #[test]
    fn never_panics_on_csvish_text(s in "[a,\"\n\r가 ]{0,60}") {
        if let Ok(t) = Table::parse("fuzz.csv", s.as_bytes()) {
            for c in 0..t.headers().len() {
                let _ = t.check_unique(c);
            }
        }
    }
}
