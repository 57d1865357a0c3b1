//! `dsum-cli morphs` (placeholder until its issue lands).

use argh::FromArgs;

/// morphs (not implemented yet)
#[derive(FromArgs)]
#[argh(subcommand, name = "morphs")]
pub struct MorphsArgs {}

pub fn run(_args: MorphsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`morphs` is not implemented yet")
}
