//! `dsum-cli summarize` (placeholder until its issue lands).

use argh::FromArgs;

/// summarize (not implemented yet)
#[derive(FromArgs)]
#[argh(subcommand, name = "summarize")]
pub struct SummarizeArgs {}

pub fn run(_args: SummarizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`summarize` is not implemented yet")
}
