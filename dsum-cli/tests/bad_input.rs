//! Bad input, table-driven, through the `dsum-cli` binary: truncated and corrupted model
//! files (safetensors, GGUF, pytorch .bin), wrong dtypes and shapes, a config from another
//! architecture, missing files, bad CSVs, huge size claims, chat templates that loop or
//! recurse, a tokenizer that does not fit the model. Every case must exit non-zero with a
//! message naming the file and the problem, never panic, and leave no output file behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Copy the files of a fixture model folder into `dst` (created).
fn copy_model(src: &str, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(fixtures().join(src)).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    f(&mut v);
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Rewrite the JSON header of a safetensors file (tensor data unchanged).
fn edit_safetensors_header(path: &Path, f: impl FnOnce(&mut Value)) {
    let bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(path, out).unwrap();
}

fn truncate(path: &Path, keep: usize) {
    let b = fs::read(path).unwrap();
    fs::write(path, &b[..keep.min(b.len())]).unwrap();
}

/// A GGUF v3 file with the given metadata key-value bytes and no tensors.
fn gguf_with_kv(n_kv: u64, kv: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(kv);
    b
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

const DIALOGUES: &str = "fname,dialogue\nt1,\"#Person1#: 안녕하세요. 오늘 회의는 3시입니다.\n#Person2#: 네, 알겠습니다.\"\nt2,#Person1#: 점심 먹었어요?\n";

/// Builds a case's files under its folder and returns the CLI arguments.
type Setup = Box<dyn Fn(&Path) -> Vec<String>>;

/// One case: `setup` builds files under the case folder and returns the CLI arguments
/// (`--output` is added by the runner); stderr must contain every `expect` string.
struct Case {
    name: &'static str,
    setup: Setup,
    expect: Vec<&'static str>,
}

fn case(
    name: &'static str,
    expect: &[&'static str],
    setup: impl Fn(&Path) -> Vec<String> + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        expect: expect.to_vec(),
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `summarize --model <model> --input <dir>/in.csv` with the standard dialogues.
fn summarize(dir: &Path, model: &Path, extra: &[&str]) -> Vec<String> {
    let input = dir.join("in.csv");
    if !input.exists() {
        fs::write(&input, DIALOGUES).unwrap();
    }
    let mut a = vec![
        "summarize".into(),
        "--quiet".into(),
        "--max-new-tokens".into(),
        "4".into(),
        "--model".into(),
        p(model),
        "--input".into(),
        p(&input),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// tiny-a (BART) copied to `<dir>/m`, changed by `f`, summarized.
fn bart_case(dir: &Path, f: impl FnOnce(&Path)) -> Vec<String> {
    let m = dir.join("m");
    copy_model("bart/models/tiny-a", &m);
    f(&m);
    summarize(dir, &m, &[])
}

/// qwen2 (causal LM with a chat template) copied to `<dir>/m`, changed by `f`, summarized.
fn qwen_case(dir: &Path, f: impl FnOnce(&Path)) -> Vec<String> {
    let m = dir.join("m");
    copy_model("llama/models/qwen2", &m);
    f(&m);
    summarize(dir, &m, &[])
}

/// tiny-a with CSV `body` as its input.
fn csv_case(dir: &Path, body: &[u8]) -> Vec<String> {
    fs::write(dir.join("in.csv"), body).unwrap();
    summarize(dir, &fixtures().join("bart/models/tiny-a"), &[])
}

fn set_chat_template(m: &Path, template: &str) {
    edit_json(&m.join("tokenizer_config.json"), |v| {
        v["chat_template"] = json!(template)
    });
}

/// `--device` values that cannot be used; `--device cuda` only on a build without CUDA (with
/// it, the answer depends on the machine's GPU).
fn device_cases() -> Vec<Case> {
    let qwen = || fixtures().join("llama/models/qwen2");
    let mut v = vec![
        case(
            "--device gpu",
            &["--device", "invalid device `gpu`", "cuda:N"],
            move |d| summarize(d, &qwen(), &["--device", "gpu"]),
        ),
        case(
            "--device cuda:x",
            &["--device", "invalid device `cuda:x`"],
            move |d| summarize(d, &qwen(), &["--device", "cuda:x"]),
        ),
    ];
    if !cfg!(any(feature = "cuda", feature = "cuda-13")) {
        v.push(case(
            "--device cuda on a build without CUDA",
            &["built without CUDA", "--features cuda"],
            move |d| summarize(d, &qwen(), &["--device", "cuda"]),
        ));
    }
    v
}

fn cases() -> Vec<Case> {
    vec![
        // --- safetensors ---
        case(
            "safetensors truncated",
            &["model.safetensors", "truncated"],
            |d| bart_case(d, |m| truncate(&m.join("model.safetensors"), 50_000)),
        ),
        case(
            "safetensors cut inside the header",
            &["model.safetensors", "not a valid safetensors"],
            |d| bart_case(d, |m| truncate(&m.join("model.safetensors"), 100)),
        ),
        case(
            "safetensors header length claims 2^62 bytes",
            &["model.safetensors", "not a valid safetensors"],
            |d| {
                bart_case(d, |m| {
                    let path = m.join("model.safetensors");
                    let mut b = fs::read(&path).unwrap();
                    b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
                    fs::write(path, b).unwrap();
                })
            },
        ),
        case(
            "safetensors header is not JSON",
            &["model.safetensors", "not a valid safetensors"],
            |d| {
                bart_case(d, |m| {
                    let path = m.join("model.safetensors");
                    let mut b = fs::read(&path).unwrap();
                    b[8..16].copy_from_slice(b"#garbage");
                    fs::write(path, b).unwrap();
                })
            },
        ),
        case(
            "safetensors wrong dtype",
            &[
                "model.safetensors",
                "model.encoder.layers.0.fc1.weight",
                "I32",
            ],
            |d| {
                bart_case(d, |m| {
                    edit_safetensors_header(&m.join("model.safetensors"), |h| {
                        h["model.encoder.layers.0.fc1.weight"]["dtype"] = json!("I32")
                    })
                })
            },
        ),
        case(
            "safetensors wrong shape",
            &[
                "model.safetensors",
                "model.encoder.layers.0.fc1.weight",
                "expected shape [128, 64], found [64, 128]",
            ],
            |d| {
                bart_case(d, |m| {
                    edit_safetensors_header(&m.join("model.safetensors"), |h| {
                        h["model.encoder.layers.0.fc1.weight"]["shape"] = json!([64, 128])
                    })
                })
            },
        ),
        case(
            "safetensors tensor missing",
            &["model.safetensors", "model.shared.weight", "missing"],
            |d| {
                bart_case(d, |m| {
                    edit_safetensors_header(&m.join("model.safetensors"), |h| {
                        let o = h.as_object_mut().unwrap();
                        let t = o.remove("model.shared.weight").unwrap();
                        o.insert("model.shared.weight_renamed".into(), t);
                    })
                })
            },
        ),
        case(
            "sharded index names a missing shard",
            &["model-00009-of-00009.safetensors"],
            |d| {
                bart_case(d, |m| {
                    fs::remove_file(m.join("model.safetensors")).unwrap();
                    fs::write(
                    m.join("model.safetensors.index.json"),
                    r#"{"weight_map": {"model.shared.weight": "model-00009-of-00009.safetensors"}}"#,
                )
                .unwrap();
                })
            },
        ),
        case(
            "sharded index escapes the folder",
            &["model.safetensors.index.json", "not a plain file name"],
            |d| {
                bart_case(d, |m| {
                    fs::remove_file(m.join("model.safetensors")).unwrap();
                    fs::write(
                        m.join("model.safetensors.index.json"),
                        r#"{"weight_map": {"a": "../../etc/passwd"}}"#,
                    )
                    .unwrap();
                })
            },
        ),
        // --- missing files ---
        case("no config.json", &["config.json"], |d| {
            bart_case(d, |m| fs::remove_file(m.join("config.json")).unwrap())
        }),
        case("no tokenizer.json", &["tokenizer.json"], |d| {
            bart_case(d, |m| fs::remove_file(m.join("tokenizer.json")).unwrap())
        }),
        case("no weights", &["no model.safetensors"], |d| {
            bart_case(d, |m| fs::remove_file(m.join("model.safetensors")).unwrap())
        }),
        case("model folder does not exist", &["no-such-model"], |d| {
            summarize(d, &d.join("no-such-model"), &[])
        }),
        // --- configs ---
        case(
            "config.json is not JSON",
            &["config.json", "invalid JSON"],
            |d| {
                bart_case(d, |m| {
                    fs::write(m.join("config.json"), "{\"model_type\": \"bart\",").unwrap()
                })
            },
        ),
        case(
            "config from another architecture (qwen2 config, BART weights)",
            &["model.safetensors", "missing from the checkpoint"],
            |d| {
                bart_case(d, |m| {
                    fs::copy(
                        fixtures().join("llama/models/qwen2/config.json"),
                        m.join("config.json"),
                    )
                    .unwrap();
                })
            },
        ),
        case(
            "unsupported model_type",
            &["config.json", "model_type `t5` is not supported"],
            |d| {
                bart_case(d, |m| {
                    edit_json(&m.join("config.json"), |v| v["model_type"] = json!("t5"))
                })
            },
        ),
        case(
            "config heads do not divide d_model",
            &["config.json", "not divisible"],
            |d| {
                bart_case(d, |m| {
                    edit_json(&m.join("config.json"), |v| {
                        v["encoder_attention_heads"] = json!(5)
                    })
                })
            },
        ),
        case(
            "config field of the wrong type",
            &["config.json", "sixty-four", "expected usize"],
            |d| {
                bart_case(d, |m| {
                    edit_json(&m.join("config.json"), |v| {
                        v["d_model"] = json!("sixty-four")
                    })
                })
            },
        ),
        case(
            "generation_config.json is not JSON",
            &["generation_config.json"],
            |d| {
                bart_case(d, |m| {
                    fs::write(m.join("generation_config.json"), "[1,").unwrap()
                })
            },
        ),
        case("max_new_tokens that overflows", &["max_new_tokens"], |d| {
            let mut a = summarize(d, &fixtures().join("bart/models/tiny-a"), &[]);
            a[3] = u64::MAX.to_string();
            a
        }),
        case(
            "num_beams that cannot be allocated",
            &["num_beams 100000000"],
            |d| {
                summarize(
                    d,
                    &fixtures().join("bart/models/tiny-a"),
                    &["--num-beams", "100000000"],
                )
            },
        ),
        case(
            "max_new_tokens whose K/V cache cannot be allocated",
            &["key/value cache"],
            |d| {
                let mut a = summarize(d, &fixtures().join("llama/models/qwen2"), &[]);
                a[3] = "100000000000".into();
                a
            },
        ),
        // --- tokenizer vs model ---
        case(
            "tokenizer larger than the model's vocab",
            &["tokenizer.json", "vocab_size is 1500"],
            |d| {
                bart_case(d, |m| {
                    edit_json(&m.join("tokenizer.json"), |v| {
                        let vocab = v["model"]["vocab"].as_object_mut().unwrap();
                        for i in 0..10 {
                            vocab.insert(format!("extra{i}"), json!(1500 + i));
                        }
                    })
                })
            },
        ),
        case(
            "tokenizer token id beyond the embedding",
            &[
                "tokenizer.json",
                "is past the model's embedding",
                "vocab_size is 1500",
            ],
            |d| {
                bart_case(d, |m| {
                    edit_json(&m.join("tokenizer.json"), |v| {
                        v["added_tokens"].as_array_mut().unwrap().push(json!({
                            "id": 5000, "content": "<big>", "single_word": false, "lstrip": false,
                            "rstrip": false, "normalized": false, "special": true
                        }));
                    })
                })
            },
        ),
        case("tokenizer.json is corrupted", &["tokenizer.json"], |d| {
            bart_case(d, |m| truncate(&m.join("tokenizer.json"), 5000))
        }),
        // --- chat templates (sandbox and fuel) ---
        case(
            "chat template loops",
            &["tokenizer_config.json", "chat template", "fuel"],
            |d| {
                qwen_case(d, |m| {
                    set_chat_template(m, "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}")
                })
            },
        ),
        case(
            "chat template recurses",
            &["tokenizer_config.json", "chat template", "recursion"],
            |d| {
                qwen_case(d, |m| {
                    set_chat_template(m, "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
                })
            },
        ),
        case(
            "chat template includes itself",
            &["tokenizer_config.json", "chat template"],
            |d| qwen_case(d, |m| set_chat_template(m, "{% include 'chat' %}")),
        ),
        case(
            "chat template tries to read a file",
            &["tokenizer_config.json", "chat template"],
            |d| qwen_case(d, |m| set_chat_template(m, "{% include '/etc/passwd' %}")),
        ),
        case(
            "chat template output explodes",
            &["tokenizer_config.json", "chat template", "too large"],
            |d| {
                qwen_case(d, |m| {
                    set_chat_template(
                        m,
                        "{% for i in range(1000) %}{{ 'x' * 90000000 }}{% endfor %}",
                    )
                })
            },
        ),
        case(
            "chat template does not compile",
            &["tokenizer_config.json", "chat template"],
            |d| qwen_case(d, |m| set_chat_template(m, "{% for m in messages %}")),
        ),
        case(
            "chat template raises",
            &["tokenizer_config.json", "only user turns"],
            |d| {
                qwen_case(d, |m| {
                    set_chat_template(m, "{{ raise_exception('only user turns') }}")
                })
            },
        ),
        // --- GGUF ---
        case("gguf truncated", &["model.gguf", "truncated"], |d| {
            let g = d.join("model.gguf");
            fs::copy(fixtures().join("gguf/tiny-llama.gguf"), &g).unwrap();
            truncate(&g, 60_000);
            summarize(d, &g, &[])
        }),
        case("gguf bad magic", &["model.gguf", "not a GGUF file"], |d| {
            let g = d.join("model.gguf");
            fs::write(&g, b"GGML\x03\0\0\0").unwrap();
            summarize(d, &g, &[])
        }),
        case(
            "gguf array claims 2^60 elements",
            &["model.gguf", "array length"],
            |d| {
                let mut kv = gguf_string("tokenizer.ggml.tokens");
                kv.extend_from_slice(&9u32.to_le_bytes()); // array
                kv.extend_from_slice(&0u32.to_le_bytes()); // of u8
                kv.extend_from_slice(&(1u64 << 60).to_le_bytes());
                let g = d.join("model.gguf");
                fs::write(&g, gguf_with_kv(1, &kv)).unwrap();
                summarize(d, &g, &[])
            },
        ),
        case(
            "gguf string claims 2^63 bytes",
            &["model.gguf", "string length"],
            |d| {
                let mut kv = (1u64 << 63).to_le_bytes().to_vec();
                kv.extend_from_slice(&[b'a'; 32]);
                let g = d.join("model.gguf");
                fs::write(&g, gguf_with_kv(1, &kv)).unwrap();
                summarize(d, &g, &[])
            },
        ),
        case(
            "gguf claims 2^40 metadata entries",
            &["model.gguf", "metadata count"],
            |d| {
                let g = d.join("model.gguf");
                fs::write(&g, gguf_with_kv(1 << 40, b"")).unwrap();
                summarize(d, &g, &[])
            },
        ),
        // --- pytorch .bin ---
        case(
            "pytorch .bin truncated",
            &["pytorch_model.bin", "corrupt zip"],
            |d| bin_case(d, |b| truncate(b, 300_000)),
        ),
        case(
            "pytorch .bin calling os.system",
            &["pytorch_model.bin", "os.system"],
            |d| {
                bin_case(d, |b| {
                    fs::copy(fixtures().join("bin/malicious_os_system.bin"), b).unwrap();
                })
            },
        ),
        case(
            "pytorch .bin calling builtins.eval",
            &["pytorch_model.bin", "eval"],
            |d| {
                bin_case(d, |b| {
                    fs::copy(fixtures().join("bin/malicious_eval.bin"), b).unwrap();
                })
            },
        ),
        case(
            "pytorch .bin in the legacy format",
            &["pytorch_model.bin", "legacy"],
            |d| {
                bin_case(d, |b| {
                    fs::copy(fixtures().join("bin/legacy.bin"), b).unwrap();
                })
            },
        ),
        case(
            "pytorch .bin that is not a zip",
            &["pytorch_model.bin", "not a PyTorch zip"],
            |d| bin_case(d, |b| fs::write(b, b"hello").unwrap()),
        ),
        // --- CSVs ---
        case(
            "csv without a dialogue column",
            &["in.csv", "missing column `dialogue`"],
            |d| csv_case(d, b"fname,text\nt1,hello\n"),
        ),
        case(
            "csv with an unclosed quote",
            &["in.csv", "never closed"],
            |d| csv_case(d, b"fname,dialogue\nt1,\"hello\nt2,bye\n"),
        ),
        case(
            "csv with text after a closing quote",
            &["in.csv", "closing quote"],
            |d| csv_case(d, b"fname,dialogue\nt1,\"say \"hi\" now\"\n"),
        ),
        case("csv that is not UTF-8", &["in.csv", "not UTF-8"], |d| {
            csv_case(d, b"fname,dialogue\nt1,\xb0\xa1\xb3\xaa\n")
        }),
        case("csv that is empty", &["in.csv", "empty file"], |d| {
            csv_case(d, b"")
        }),
        case("csv with only a header", &["in.csv", "no rows"], |d| {
            csv_case(d, b"fname,dialogue\n")
        }),
        case(
            "csv row of the wrong width",
            &["in.csv", "line 3", "3 fields"],
            |d| csv_case(d, b"fname,dialogue\nt1,hi\nt2,a,b\n"),
        ),
        case(
            "csv with a duplicate fname",
            &["in.csv", "duplicate fname", "`t1`"],
            |d| csv_case(d, b"fname,dialogue\nt1,hi\nt1,bye\n"),
        ),
        case(
            "csv with an empty dialogue",
            &["in.csv", "line 2", "empty"],
            |d| csv_case(d, b"fname,dialogue\nt1,\"  \"\n"),
        ),
        case("input csv does not exist", &["nope.csv"], |d| {
            let mut a = csv_case(d, b"");
            a[7] = p(&d.join("nope.csv"));
            a
        }),
    ]
}

/// tiny-b (BART) with its weights as `pytorch_model.bin`, changed by `f`.
fn bin_case(dir: &Path, f: impl FnOnce(&Path)) -> Vec<String> {
    let m = dir.join("m");
    copy_model("bart/models/tiny-b", &m);
    fs::remove_file(m.join("model.safetensors")).unwrap();
    let bin = m.join("pytorch_model.bin");
    fs::copy(fixtures().join("bin/tiny-b/pytorch_model.bin"), &bin).unwrap();
    f(&bin);
    summarize(dir, &m, &[])
}

#[test]
fn every_bad_input_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in cases().into_iter().chain(device_cases()).enumerate() {
        let dir = root.path().join(format!("case{i}"));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.csv");
        let mut args = (c.setup)(&dir);
        args.extend(["--output".to_string(), p(&out)]);
        let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let mut why = Vec::new();
        if o.status.success() {
            why.push("exited 0".to_string());
        }
        if err.contains("panicked at") || err.contains("RUST_BACKTRACE") {
            why.push("panicked".to_string());
        }
        for e in &c.expect {
            if !err.contains(e) {
                why.push(format!("stderr lacks `{e}`"));
            }
        }
        for f in [out.clone(), dir.join("out.csv.partial")] {
            if f.exists() {
                why.push(format!("{} was left behind", f.display()));
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {}",
                c.name,
                why.join("; "),
                err.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `finetune --device`: a bad value, and CUDA where this build or machine has none, before
/// anything is read.
#[test]
fn finetune_device_errors() {
    let no_cuda = if cfg!(any(feature = "cuda", feature = "cuda-13")) {
        "--device cuda:1: CUDA:"
    } else {
        "this dsum was built without CUDA"
    };
    for (device, want) in [("gpu", "invalid device `gpu`"), ("cuda:1", no_cuda)] {
        let o = Command::new(env!("CARGO_BIN_EXE_dsum-cli"))
            .args(["finetune", "--config", "no-such.toml", "--device", device])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{device}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{device}: {err}"
        );
    }
}
