//! `dsum-cli`: the command-line frontend. It only parses arguments and prints; the work is
//! done by `dsum-core`. One file per verb under `cmd/`.

mod cmd;

use argh::FromArgs;

/// mimalloc keeps freed pages for reuse: a training step allocates its activations (~1.5 GB
/// for SmolLM2 at 4 x 256 tokens) afresh, and glibc's large blocks go back to the kernel on
/// free and come back as page faults (a LoRA step was ~30% faster with mimalloc, BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc decommits freed pages after 10 ms by default, which is the next step's page faults
/// again; -1 keeps them (`mi_option_purge_delay`, 15 in both mimalloc v2 and v3).
fn keep_freed_pages() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// dsum: Korean dialogue summarization — summarize, generate, score, screen, morphs, convert.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    verb: Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Verb {
    Summarize(cmd::summarize::SummarizeArgs),
    Generate(cmd::generate::GenerateArgs),
    Score(cmd::score::ScoreArgs),
    Screen(cmd::screen::ScreenArgs),
    Morphs(cmd::morphs::MorphsArgs),
    Convert(cmd::convert::ConvertArgs),
    Finetune(cmd::finetune::FinetuneArgs),
    Merge(cmd::merge::MergeArgs),
    Nf4(cmd::nf4::Nf4Args),
}

impl Verb {
    /// `--threads` of the verbs that have it.
    fn threads(&self) -> Option<usize> {
        match self {
            Verb::Summarize(a) => a.threads,
            Verb::Generate(a) => a.threads,
            Verb::Screen(a) => a.threads,
            Verb::Finetune(a) => a.threads,
            _ => None,
        }
    }
}

fn main() {
    keep_freed_pages();
    let cli: Cli = argh::from_env();
    // The verb runs on a worker of the thread pool, so a parallel op forks from a worker and the
    // calling thread does its share. Run from the main thread instead, every op is handed to the
    // pool while the main thread sleeps: two context switches per matmul, a third of the time
    // when decoding a small model.
    let result =
        cmd::common::set_threads(cli.verb.threads()).and_then(|()| rayon::scope(|_| run(cli.verb)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Summarize(a) => cmd::summarize::run(a),
        Verb::Generate(a) => cmd::generate::run(a),
        Verb::Score(a) => cmd::score::run(a),
        Verb::Screen(a) => cmd::screen::run(a),
        Verb::Morphs(a) => cmd::morphs::run(a),
        Verb::Convert(a) => cmd::convert::run(a),
        Verb::Finetune(a) => cmd::finetune::run(a),
        Verb::Merge(a) => cmd::merge::run(a),
        Verb::Nf4(a) => cmd::nf4::run(a),
    }
}
