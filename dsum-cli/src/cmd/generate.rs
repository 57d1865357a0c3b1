//! `dsum-cli generate` (placeholder until its issue lands).

use argh::FromArgs;

/// generate (not implemented yet)
#[derive(FromArgs)]
#[argh(subcommand, name = "generate")]
pub struct GenerateArgs {}

pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::bail!("`generate` is not implemented yet")
}
