//! `dsum-cli score` (placeholder until its issue lands).

use argh::FromArgs;

/// score (not implemented yet)
#[derive(FromArgs)]
#[argh(subcommand, name = "score")]
pub struct ScoreArgs {}

pub fn run(_args: ScoreArgs) -> anyhow::Result<()> {
    anyhow::bail!("`score` is not implemented yet")
}
