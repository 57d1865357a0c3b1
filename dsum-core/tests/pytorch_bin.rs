//! PyTorch `.bin` checkpoints written by torch (tools/fixtures/make_bin_fixtures.py) read to
//! exactly the tensors of their safetensors twins, drive the same generation, convert
//! bit-exactly, and hostile pickles are refused without running anything.

mod common;

use std::path::{Path, PathBuf};

use dsum_core::generation::GenerationConfig;
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::io::convert::convert_dir;
use dsum_core::io::pytorch::PtCheckpoint;
use dsum_core::io::raw_tensor::TensorSource;
use dsum_core::models::LoadedModel;

fn bin(name: &str) -> PathBuf {
    common::fixtures("bin").join(name)
}

/// Same names, dtypes, shapes and bytes.
fn assert_same_tensors(a: &dyn TensorSource, b: &dyn TensorSource) {
    let names = a.tensor_names();
    assert_eq!(
        names,
        b.tensor_names(),
        "{} vs {}",
        a.source_path(),
        b.source_path()
    );
    for n in names {
        let (x, y) = (a.raw_tensor(&n).unwrap(), b.raw_tensor(&n).unwrap());
        assert_eq!(x.dtype, y.dtype, "{n}");
        assert_eq!(x.shape, y.shape, "{n}");
        assert!(x.bytes() == y.bytes(), "{n}: bytes differ");
    }
}

/// A model folder with the original config/tokenizer files and only `.bin` weights.
fn bin_folder(original: &Path, bins: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(original).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.contains("safetensors") {
            std::fs::copy(&p, dir.path().join(name)).unwrap();
        }
    }
    for e in std::fs::read_dir(bins).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn greedy_ids(m: &LoadedModel, rows: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut gen: GenerationConfig = m.generation.clone();
    gen.apply_json(
        &serde_json::json!({"num_beams": 1, "do_sample": false, "max_new_tokens": 12}),
        "test",
    )
    .unwrap();
    m.generate(rows, &gen, false)
        .unwrap()
        .into_iter()
        .map(|h| h[0].tokens.clone())
        .collect()
}

#[test]
fn views_dtypes_and_offsets_match_safetensors() {
    let pt = PtCheckpoint::open_file(&bin("views.bin")).unwrap();
    let bytes = dsum_core::io::checkpoint::read_shared(&bin("views.safetensors")).unwrap();
    let st = Checkpoint::from_files(vec![("views.safetensors".into(), bytes)]).unwrap();
    assert_same_tensors(&pt, &st);
    // Contiguous tensors are borrowed from the map; strided views are gathered copies.
    assert!(pt.get("plain").unwrap().is_borrowed());
    assert!(pt.get("half").unwrap().is_borrowed());
    assert!(!pt.get("transposed").unwrap().is_borrowed());
    // Aligned f32 stays zero-copy through to the model weights.
    let ck = pt.into_checkpoint().unwrap();
    assert!(ck.get("plain", &[3, 4]).unwrap().is_borrowed());
    assert_eq!(ck.get("half.t", &[5, 3]).unwrap().len(), 15);
}

#[test]
fn bart_bin_equals_safetensors() {
    let pt = PtCheckpoint::open_dir(&bin("tiny-b")).unwrap();
    let st = Checkpoint::open_dir(&common::fixtures("bart").join("models/tiny-b")).unwrap();
    assert_same_tensors(&pt, &st);
}

#[test]
fn sharded_qwen2_bin_equals_safetensors() {
    let pt = PtCheckpoint::open_dir(&bin("qwen2-sharded")).unwrap();
    let st = Checkpoint::open_dir(&common::fixtures("llama").join("models/qwen2")).unwrap();
    assert_same_tensors(&pt, &st);
}

#[test]
fn bin_only_folders_generate_the_same_ids() {
    for (orig, bins) in [
        (
            common::fixtures("bart").join("models/tiny-b"),
            bin("tiny-b"),
        ),
        (
            common::fixtures("llama").join("models/qwen2"),
            bin("qwen2-sharded"),
        ),
    ] {
        let folder = bin_folder(&orig, &bins);
        let a = LoadedModel::load(&orig).unwrap();
        let b = LoadedModel::load(folder.path()).unwrap();
        let rows = vec![vec![5, 17, 42, 99, 7], vec![3, 250, 11]];
        assert_eq!(
            greedy_ids(&a, &rows),
            greedy_ids(&b, &rows),
            "{}",
            orig.display()
        );
    }
}

#[test]
fn converted_folder_is_bit_identical() {
    let orig = common::fixtures("bart").join("models/tiny-b");
    let folder = bin_folder(&orig, &bin("tiny-b"));
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("converted");
    let s = convert_dir(folder.path(), &target).unwrap();
    assert!(s.copied.iter().any(|f| f == "tokenizer.json"));
    assert!(!out.path().join("converted.partial").exists());
    let st = Checkpoint::open_dir(&target).unwrap();
    assert_same_tensors(&st, &Checkpoint::open_dir(&orig).unwrap());
    // Converting again into a non-empty folder is refused, nothing overwritten.
    assert!(convert_dir(folder.path(), &target).is_err());
    // f16 / strided views keep their dtype and values.
    let views = tempfile::tempdir().unwrap();
    std::fs::copy(bin("views.bin"), views.path().join("pytorch_model.bin")).unwrap();
    let target = out.path().join("views");
    convert_dir(views.path(), &target).unwrap();
    let pt = PtCheckpoint::open_file(&bin("views.bin")).unwrap();
    assert_same_tensors(&pt, &Checkpoint::open_dir(&target).unwrap());
}

#[test]
fn malicious_pickles_are_refused_by_name() {
    for (file, global) in [
        ("malicious_os_system.bin", "os.system"),
        ("malicious_eval.bin", "builtins.eval"),
    ] {
        let e = PtCheckpoint::open_file(&bin(file))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(global) && e.contains(file), "{e}");
        assert!(e.contains("nothing was executed"), "{e}");
    }
}

#[test]
fn legacy_format_has_a_clear_error() {
    let e = PtCheckpoint::open_file(&bin("legacy.bin"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("legacy") && e.contains("torch>=1.6"), "{e}");
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let full = std::fs::read(bin("views.bin")).unwrap();
    for cut in [0, 10, 100, full.len() / 2, full.len() - 30, full.len() - 1] {
        let bytes: dsum_core::tensor::SharedBytes = std::sync::Arc::new(full[..cut].to_vec());
        assert!(
            PtCheckpoint::from_bytes("cut.bin", bytes).is_err(),
            "cut at {cut}"
        );
    }
    // Flipped bytes anywhere: never a panic.
    for i in (0..full.len()).step_by(7) {
        let mut b = full.clone();
        b[i] ^= 0x5a;
        let _ = PtCheckpoint::from_bytes("flip.bin", std::sync::Arc::new(b));
    }
}

proptest::proptest! {
    /// Arbitrary bytes as a pickle or as a `.bin` file: an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = dsum_core::io::pickle::unpickle(&bytes, "fuzz.pkl");
        let _ = PtCheckpoint::from_bytes("fuzz.bin", std::sync::Arc::new(bytes));
    }

    /// A real checkpoint with a few bytes overwritten anywhere: an error or a checkpoint.
    #[test]
    fn mutated_checkpoints_never_panic(edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8)) {
        let mut b = std::fs::read(bin("views.bin")).unwrap();
        for (at, v) in edits {
            let n = b.len();
            b[at % n] = v;
        }
        let _ = PtCheckpoint::from_bytes("mutated.bin", std::sync::Arc::new(b));
    }
}
