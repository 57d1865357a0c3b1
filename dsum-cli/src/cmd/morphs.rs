//! `dsum-cli morphs`: Mecab-ko morphemes of each stdin line, space separated (with `--pos`,
//! `morph/TAG`), as python-mecab-ko's `MeCab().morphs()` / `.pos()` print them.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;
use dsum_core::mecab::{locate_dictionary, Mecab};

/// print the Mecab-ko morphemes of each line read on stdin
#[derive(FromArgs)]
#[argh(subcommand, name = "morphs")]
pub struct MorphsArgs {
    /// compiled mecab-ko-dic folder (sys.dic, matrix.bin, char.bin, unk.dic, dicrc); default:
    /// $DSUM_MECAB_DIC, then /usr/local/lib/mecab/dic/mecab-ko-dic, /usr/lib/mecab/dic/mecab-ko-dic
    #[argh(option)]
    pub mecab_dic: Option<PathBuf>,
    /// print `morph/TAG` instead of bare morphemes
    #[argh(switch)]
    pub pos: bool,
}

pub fn run(args: MorphsArgs) -> anyhow::Result<()> {
    let dir = locate_dictionary(args.mecab_dic.as_deref())?;
    let mecab = Mecab::load(&dir)
        .with_context(|| format!("loading the Mecab-ko dictionary {}", dir.display()))?;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (i, line) in stdin.split(b'\n').enumerate() {
        let line = line.context("reading stdin")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let text = std::str::from_utf8(line)
            .with_context(|| format!("stdin line {}: not valid UTF-8", i + 1))?;
        if args.pos {
            let items: Vec<String> = mecab
                .pos(text)
                .into_iter()
                .map(|(m, t)| format!("{m}/{t}"))
                .collect();
            writeln!(out, "{}", items.join(" "))?;
        } else {
            writeln!(out, "{}", mecab.morphs(text).join(" "))?;
        }
    }
    out.flush()?;
    Ok(())
}
