//! Untrusted model files (issue 8, item 5): chat templates are sandboxed (no filesystem, no
//! network, bounded work and output), header and metadata sizes are checked against the
//! file before anything is allocated, and the unpickler only builds data from an allowlist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dsum_core::chat::{ChatTemplate, Message, MAX_RENDER_BYTES};
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::gguf::GgufFile;
use dsum_core::io::pickle::unpickle;

/// Each hostile input must be refused fast: a check that allocated or looped first would not be.
fn quickly<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{what}: took {:?}",
        t.elapsed()
    );
    r
}

fn render(src: &str) -> Result<String, String> {
    let t = ChatTemplate::new_named(src, "<s>", "</s>", "m/tokenizer_config.json")
        .map_err(|e| e.to_string())?;
    t.render(
        &[Message::new("user", "안녕")],
        true,
        &serde_json::Value::Null,
    )
    .map_err(|e| e.to_string())
}

// ---- chat templates ----

#[test]
fn templates_cannot_read_files() {
    for src in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as p %}",
        "{% extends '../../etc/passwd' %}",
        "{{ open('/etc/passwd').read() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    ] {
        match render(src) {
            Err(e) => assert!(e.contains("tokenizer_config.json"), "{src}: {e}"),
            Ok(out) => assert!(!out.contains("root:"), "{src} read a file: {out}"),
        }
    }
}

#[test]
fn templates_have_no_network_or_environment_access() {
    // No loader, no `env`, no `url` helpers: these names are simply undefined.
    for src in [
        "{{ fetch('http://127.0.0.1/') }}",
        "{{ env('HOME') }}",
        "{{ import('os') }}",
    ] {
        let e = render(src).unwrap_err();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("chat template"),
            "{e}"
        );
    }
}

#[test]
fn looping_and_recursing_templates_stop() {
    for (src, want) in [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            "fuel",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
        ("{% include 'chat' %}", "recursion"),
        ("{% for i in range(1000000000) %}{% endfor %}", "range"),
    ] {
        let e = quickly(src, || render(src)).unwrap_err();
        assert!(e.contains(want), "{src}: {e}");
    }
}

#[test]
fn rendered_output_is_bounded() {
    // Cheap in fuel (one instruction per 90 MB), so only the output cap stops it.
    let src = "{% for i in range(1000) %}{{ 'x' * 90000000 }}{% endfor %}";
    let e = quickly(src, || render(src)).unwrap_err();
    assert!(
        e.contains("too large") && e.contains(&MAX_RENDER_BYTES.to_string()),
        "{e}"
    );
    // A big but legitimate prompt still renders.
    let ok = render("{{ 'x' * 1000000 }}").unwrap();
    assert_eq!(ok.len(), 1_000_000);
}

// ---- safetensors ----

fn safetensors(header_len: u64, rest: &[u8]) -> Checkpoint {
    let mut b = header_len.to_le_bytes().to_vec();
    b.extend_from_slice(rest);
    match Checkpoint::from_files(vec![("x.safetensors".into(), Arc::new(b))]) {
        Ok(_) => panic!("accepted a corrupt header"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("x.safetensors"), "{e}");
            Checkpoint::from_weights("x", Default::default())
        }
    }
}

#[test]
fn safetensors_header_length_is_checked_before_allocation() {
    quickly("2^62 header", || safetensors(1 << 62, b"{}"));
    quickly("u64::MAX header", || safetensors(u64::MAX, b"{}"));
    quickly("header past the end", || {
        safetensors(50 << 20, b"{\"a\":1}")
    });
    // A tensor that claims more data than the file has.
    let h = br#"{"w":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,4]}}"#;
    quickly("huge shape", || safetensors(h.len() as u64, h));
}

// ---- GGUF ----

fn gguf(n_tensors: u64, n_kv: u64, rest: &[u8]) -> String {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(rest);
    match GgufFile::parse("x.gguf", Arc::new(b)) {
        Ok(_) => panic!("accepted a corrupt GGUF"),
        Err(e) => e.to_string(),
    }
}

fn key(name: &str, ty: u32) -> Vec<u8> {
    let mut b = (name.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b
}

#[test]
fn gguf_array_of_2_pow_60_elements_is_refused_without_allocating() {
    for ety in [0u32, 8, 10] {
        let mut kv = key("tokenizer.ggml.tokens", 9);
        kv.extend_from_slice(&ety.to_le_bytes());
        kv.extend_from_slice(&(1u64 << 60).to_le_bytes());
        kv.extend_from_slice(&[0; 64]);
        let e = quickly("2^60 array", || gguf(0, 1, &kv));
        assert!(e.contains("x.gguf") && e.contains("array length"), "{e}");
    }
}

#[test]
fn gguf_counts_and_lengths_are_bounded_by_the_file() {
    let e = quickly("2^60 tensors", || gguf(1 << 60, 0, &[0; 64]));
    assert!(e.contains("tensor count"), "{e}");
    let e = quickly("2^60 keys", || gguf(0, 1 << 60, &[0; 64]));
    assert!(e.contains("metadata count"), "{e}");
    let mut kv = (1u64 << 63).to_le_bytes().to_vec();
    kv.extend_from_slice(&[b'a'; 32]);
    let e = quickly("2^63 key length", || gguf(0, 1, &kv));
    assert!(e.contains("string length"), "{e}");
    // A string value claiming more bytes than remain.
    let mut kv = key("general.name", 8);
    kv.extend_from_slice(&(1u64 << 40).to_le_bytes());
    kv.extend_from_slice(b"abc");
    let e = quickly("2^40 string", || gguf(0, 1, &kv));
    assert!(e.contains("string length"), "{e}");
    // Nested arrays are refused rather than recursed into.
    let mut kv = key("a", 9);
    kv.extend_from_slice(&9u32.to_le_bytes());
    kv.extend_from_slice(&1u64.to_le_bytes());
    kv.extend_from_slice(&[0; 64]);
    let e = quickly("nested array", || gguf(0, 1, &kv));
    assert!(e.contains("nested"), "{e}");
}

#[test]
fn gguf_tensor_dims_that_overflow_are_refused() {
    // One tensor `t`, 4 dims of 2^32 (product overflows u64), F32, offset 0.
    let mut t = 1u64.to_le_bytes().to_vec();
    t.push(b't');
    t.extend_from_slice(&4u32.to_le_bytes());
    for _ in 0..4 {
        t.extend_from_slice(&(1u64 << 32).to_le_bytes());
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&0u64.to_le_bytes());
    t.extend_from_slice(&[0; 64]);
    let e = quickly("overflowing dims", || gguf(1, 0, &t));
    assert!(e.contains("overflow"), "{e}");
}

// ---- pickle ----

/// `GLOBAL module name`, then an empty tuple and REDUCE: what a malicious pickle does.
fn call_global(module: &str, name: &str) -> Vec<u8> {
    let mut p = b"\x80\x02c".to_vec();
    p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    p.extend_from_slice(b")R.");
    p
}

/// The same with protocol 4's STACK_GLOBAL (module and name as strings on the stack).
fn call_stack_global(module: &str, name: &str) -> Vec<u8> {
    let mut p = b"\x80\x04".to_vec();
    for s in [module, name] {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(b"\x93)R.");
    p
}

#[test]
fn pickle_refuses_every_global_outside_the_allowlist() {
    for (m, n) in [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "eval"),
        ("torch", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("torch._utils", "_rebuild_from_type_v2"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("collections", "defaultdict"),
        ("torch", "FloatStorageX"),
    ] {
        for p in [call_global(m, n), call_stack_global(m, n)] {
            let e = unpickle(&p, "evil.bin").unwrap_err().to_string();
            assert!(
                e.contains(&format!("{m}.{n}")) && e.contains("evil.bin"),
                "{e}"
            );
        }
    }
    // The allowlist itself still works: an OrderedDict is data.
    assert!(unpickle(&call_global("collections", "OrderedDict"), "ok.bin").is_ok());
}

#[test]
fn pickle_sizes_are_checked_before_allocation() {
    for p in [
        &b"\x80\x02X\xff\xff\xff\xff"[..], // BINUNICODE of 4 GiB
        b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", // BINUNICODE8
        b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f", // BINBYTES8
        b"\x80\x02B\xff\xff\xff\x7f",      // BINBYTES
        b"\x80\x02\x8b\xff\xff\xff\x7f",   // LONG4
        b"\x80\x02r\xff\xff\xff\xff",      // LONG_BINPUT far away
    ] {
        assert!(quickly("huge pickle length", || unpickle(p, "x.bin")).is_err());
    }
}

#[test]
fn pickle_work_is_bounded() {
    // 2^22 DUP of one list: a tiny file that would make a huge stack.
    let mut p = b"\x80\x02]".to_vec();
    p.extend(std::iter::repeat_n(b'2', 1 << 22));
    p.push(b'.');
    let r = quickly("DUP flood", || unpickle(&p, "x.bin"));
    // Either refused or a bounded value; never a hang or an abort.
    drop(r);
}
