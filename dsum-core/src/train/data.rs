//! Training data: competition CSV rows (`fname,dialogue,summary,topic`) into token
//! examples and right-padded [`Batch`]es, exactly as the PyTorch reference builds them.
//!
//! BART: `input_ids` = tokenizer(dialogue) and `labels` = tokenizer(summary), both with
//! special tokens, truncated; `decoder_input_ids` = labels shifted right behind
//! `decoder_start_token_id` with -100 as pad (transformers' `shift_tokens_right`).
//! Causal LMs: the chat-template prompt of the (token-truncated) dialogue, then the
//! summary's tokens and the token that closes an assistant turn; labels are -100 over the
//! prompt, so only the answer is learned.

use super::{Batch, IGNORE};
use crate::error::{Error, Result};
use crate::prompt::PromptBuilder;
use crate::tokenizer::Tokenizer;

/// One tokenized row. Causal: `labels` is aligned with `input_ids`. BART: `input_ids` is
/// the encoder input and `labels` the target ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lengths {
    /// Dialogue tokens kept (BART: including special tokens).
    pub max_source_len: usize,
    /// Summary tokens kept (BART: including special tokens; causal: before the close token).
    pub max_target_len: usize,
}

impl Default for Lengths {
    /// The seed's koBART setup: encoder 512, decoder 100.
    fn default() -> Self {
        Lengths {
            max_source_len: 512,
            max_target_len: 100,
        }
    }
}

pub fn bart_example(
    tok: &Tokenizer,
    dialogue: &str,
    summary: &str,
    len: Lengths,
) -> Result<Example> {
    Ok(Example {
        input_ids: tok.encode(dialogue, Some(len.max_source_len))?,
        labels: tok
            .encode(summary, Some(len.max_target_len))?
            .into_iter()
            .map(i64::from)
            .collect(),
    })
}

/// The dialogue cut after its first `max_tokens` tokens (tokenized alone, no special
/// tokens), at the end of that token's span in the text.
pub fn truncate_dialogue<'a>(
    tok: &Tokenizer,
    dialogue: &'a str,
    max_tokens: usize,
) -> Result<&'a str> {
    let (ids, offsets) = tok.encode_plain_offsets(dialogue)?;
    if ids.len() <= max_tokens || max_tokens == 0 {
        return Ok(if max_tokens == 0 { "" } else { dialogue });
    }
    let mut end = offsets[max_tokens - 1].1.min(dialogue.len());
    // Spans are character-aligned; stay safe if a tokenizer reports a byte inside one.
    while !dialogue.is_char_boundary(end) {
        end += 1;
    }
    Ok(&dialogue[..end])
}

pub fn causal_example(
    tok: &Tokenizer,
    prompts: &PromptBuilder,
    dialogue: &str,
    summary: &str,
    len: Lengths,
    close_id: u32,
) -> Result<Example> {
    let dialogue = truncate_dialogue(tok, dialogue, len.max_source_len)?;
    let prompt = tok.encode_plain(&prompts.render_dialogue(dialogue)?)?;
    let mut target = tok.encode_plain(summary)?;
    target.truncate(len.max_target_len);
    target.push(close_id);
    let mut labels = vec![IGNORE; prompt.len()];
    labels.extend(target.iter().map(|&t| i64::from(t)));
    let mut input_ids = prompt;
    input_ids.extend(target);
    Ok(Example { input_ids, labels })
}

/// The token that ends an assistant turn: `configured` if given, else `<|eot_id|>`
/// (Llama 3), else `<|im_end|>` (ChatML), else the eos token.
pub fn close_token_id(
    tok: &Tokenizer,
    configured: Option<&str>,
    eos: Option<u32>,
    source: &str,
) -> Result<u32> {
    if let Some(t) = configured {
        return tok.token_to_id(t).ok_or_else(|| {
            Error::config(
                source,
                format!("close token `{t}` is not in the tokenizer's vocabulary"),
            )
        });
    }
    tok.token_to_id("<|eot_id|>")
        .or_else(|| tok.token_to_id("<|im_end|>"))
        .or(eos)
        .or_else(|| tok.eos_token.as_deref().and_then(|t| tok.token_to_id(t)))
        .ok_or_else(|| {
            Error::config(
                source,
                "no token closes an assistant turn (no <|eot_id|>, <|im_end|> or eos); set `close_token`",
            )
        })
}

/// How micro-batches are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collate {
    pub causal: bool,
    pub pad_id: u32,
    /// BART's `decoder_start_token_id` (unused for causal LMs).
    pub decoder_start_id: u32,
}

/// Right-pad `examples` (in order) into one batch.
pub fn collate(examples: &[&Example], c: Collate) -> Batch {
    let rows = examples.len();
    let cols = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let mut b = Batch {
        rows,
        cols,
        input_ids: vec![c.pad_id; rows * cols],
        attention_mask: vec![false; rows * cols],
        ..Default::default()
    };
    for (r, e) in examples.iter().enumerate() {
        b.input_ids[r * cols..r * cols + e.input_ids.len()].copy_from_slice(&e.input_ids);
        b.attention_mask[r * cols..r * cols + e.input_ids.len()].fill(true);
    }
    if c.causal {
        b.labels = vec![IGNORE; rows * cols];
        for (r, e) in examples.iter().enumerate() {
            b.labels[r * cols..r * cols + e.labels.len()].copy_from_slice(&e.labels);
        }
        return b;
    }
    let dec = examples.iter().map(|e| e.labels.len()).max().unwrap_or(0);
    b.dec_cols = dec;
    b.labels = vec![IGNORE; rows * dec];
    for (r, e) in examples.iter().enumerate() {
        b.labels[r * dec..r * dec + e.labels.len()].copy_from_slice(&e.labels);
    }
    // shift_tokens_right: start token first, labels moved one right, -100 -> pad.
    b.decoder_input_ids = vec![c.pad_id; rows * dec];
    for (row, labels) in b
        .decoder_input_ids
        .chunks_mut(dec.max(1))
        .zip(b.labels.chunks(dec.max(1)))
    {
        if let Some(first) = row.first_mut() {
            *first = c.decoder_start_id;
        }
        for (d, &l) in row[1..].iter_mut().zip(labels) {
            *d = if l == IGNORE { c.pad_id } else { l as u32 };
        }
    }
    b
}

/// How examples are built from rows: BART, or a causal LM with its prompt and close token.
pub enum Builder<'a> {
    Bart,
    Causal {
        prompts: &'a PromptBuilder,
        close_id: u32,
    },
}

/// One CSV row that was read: its fname (or line), dialogue and summary.
#[derive(Clone, Debug)]
pub struct Row {
    pub fname: String,
    pub dialogue: String,
    pub summary: String,
}

/// Read `dialogue` and `summary` (and `fname` when present) from a competition CSV.
/// Every problem names the file and line; a file with no rows is an error.
#[cfg(feature = "std")]
pub fn read_rows(path: &std::path::Path) -> Result<Vec<Row>> {
    use crate::io::csv::Table;
    let table = Table::read(path)?;
    let shown = path.display().to_string();
    let (di, si) = (table.column("dialogue")?, table.column("summary")?);
    let fi = table.find_column("fname");
    let mut out = Vec::with_capacity(table.len());
    for row in table.rows() {
        let (d, s) = (row.get(di), row.get(si));
        let fname = fi
            .map(|c| row.get(c).to_string())
            .unwrap_or_else(|| format!("line {}", row.line()));
        if d.trim().is_empty() || s.trim().is_empty() {
            let what = if d.trim().is_empty() {
                "dialogue"
            } else {
                "summary"
            };
            return Err(Error::data(
                &shown,
                format!("line {}: the {what} of `{fname}` is empty", row.line()),
            ));
        }
        out.push(Row {
            fname,
            dialogue: d.to_string(),
            summary: s.to_string(),
        });
    }
    if out.is_empty() {
        return Err(Error::data(&shown, "no rows (only a header)"));
    }
    Ok(out)
}

/// Tokenize rows into examples.
pub fn examples(
    tok: &Tokenizer,
    rows: &[Row],
    builder: &Builder,
    len: Lengths,
) -> Result<Vec<Example>> {
    rows.iter()
        .map(|r| match builder {
            Builder::Bart => bart_example(tok, &r.dialogue, &r.summary, len),
            Builder::Causal { prompts, close_id } => {
                causal_example(tok, prompts, &r.dialogue, &r.summary, len, *close_id)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bart_collate_pads_and_shifts() {
        let a = Example {
            input_ids: vec![0, 5, 6, 2],
            labels: vec![0, 7, 2],
        };
        let b = Example {
            input_ids: vec![0, 9, 2],
            labels: vec![0, 8, 9, 10, 2],
        };
        let c = Collate {
            causal: false,
            pad_id: 1,
            decoder_start_id: 2,
        };
        let bt = collate(&[&a, &b], c);
        assert_eq!((bt.rows, bt.cols, bt.dec_cols), (2, 4, 5));
        assert_eq!(bt.input_ids, vec![0, 5, 6, 2, 0, 9, 2, 1]);
        assert_eq!(
            bt.attention_mask,
            vec![true, true, true, true, true, true, true, false]
        );
        assert_eq!(bt.labels, vec![0, 7, 2, -100, -100, 0, 8, 9, 10, 2]);
        assert_eq!(bt.decoder_input_ids, vec![2, 0, 7, 2, 1, 2, 0, 8, 9, 10]);
        assert_eq!(bt.counted_tokens(false), 8);
    }

    #[test]
    fn causal_collate_pads_labels() {
        let a = Example {
            input_ids: vec![3, 4, 5],
            labels: vec![-100, 4, 5],
        };
        let b = Example {
            input_ids: vec![3, 4],
            labels: vec![-100, 9],
        };
        let bt = collate(
            &[&a, &b],
            Collate {
                causal: true,
                pad_id: 0,
                decoder_start_id: 0,
            },
        );
        assert_eq!(bt.input_ids, vec![3, 4, 5, 3, 4, 0]);
        assert_eq!(bt.labels, vec![-100, 4, 5, -100, 9, -100]);
        assert_eq!(bt.counted_tokens(true), 3);
        assert!(bt.decoder_input_ids.is_empty());
    }
}
