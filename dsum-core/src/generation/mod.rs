//! Generation with transformers semantics: greedy and beam search with its logits
//! processors, over any model that implements [`StepDecoder`].

pub mod config;
pub mod logits;
pub mod scripts;
pub mod search;

pub use config::{EarlyStopping, GenerationConfig, Ids, Resolved};
pub use search::{beam_search, greedy, Hypothesis, StepDecoder};

use crate::error::Result;

/// Greedy when `num_beams == 1`, beam search otherwise (transformers' dispatch without sampling).
pub fn run<D: StepDecoder>(
    dec: &mut D,
    cfg: &Resolved,
    prompts: Vec<Vec<u32>>,
) -> Result<Vec<Vec<Hypothesis>>> {
    run_streaming(dec, cfg, prompts, &mut |_, _| {})
}

/// [`run`] that also reports each new token `(row, id)` as greedy search picks it (beam
/// search only knows its sequences at the end, so it reports nothing).
pub fn run_streaming<D: StepDecoder>(
    dec: &mut D,
    cfg: &Resolved,
    prompts: Vec<Vec<u32>>,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<Vec<Hypothesis>>> {
    if cfg.num_beams == 1 {
        greedy(dec, cfg, prompts, on_token)
    } else {
        beam_search(dec, cfg, prompts)
    }
}
