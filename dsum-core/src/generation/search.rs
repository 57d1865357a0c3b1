//! Greedy and beam search, step for step as transformers 4.57's `_sample` (greedy) and
//! vectorized `_beam_search` compute them, including its f32 arithmetic with -1e9 masks,
//! so that ties and near-ties resolve the same way.

use super::config::{EarlyStopping, Resolved};
use super::logits::process;
use crate::error::Result;
use crate::ops::softmax::log_softmax_inplace;

/// A model that decodes rows one token at a time.
pub trait StepDecoder {
    fn vocab_size(&self) -> usize;
    /// Feed the (equal-length, possibly padded) prompt of every row; returns the logits of
    /// each row's last position [rows, V].
    fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<f32>>;
    /// Feed the last token of every live row; returns logits [rows, V].
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// New row r continues old row `idx[r]` (beam reordering).
    fn reorder(&mut self, idx: &[usize]) -> Result<()>;
}

/// One returned sequence: decoder ids (prompt included, no padding) and, for beam search,
/// its length-normalized score.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<u32>,
    pub score: Option<f32>,
}

/// Greedy decoding of `prompts.len()` rows. Finished rows are fed the pad token, as in
/// transformers, so batched and unbatched runs compute the same live rows.
pub fn greedy<D: StepDecoder>(
    dec: &mut D,
    cfg: &Resolved,
    prompts: Vec<Vec<u32>>,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<Hypothesis>>> {
    let b = prompts.len();
    let mut seqs = prompts;
    let mut done = vec![false; b];
    let mut feed: Vec<u32> = vec![cfg.pad_token_id; b];
    let mut cur_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut first = true;
    while cur_len < cfg.max_length && done.iter().any(|d| !d) {
        let logits = if first {
            dec.prefill(&seqs)?
        } else {
            dec.step(&feed)?
        };
        first = false;
        let v = dec.vocab_size();
        for i in 0..b {
            if done[i] {
                feed[i] = cfg.pad_token_id;
                continue;
            }
            let mut row = logits[i * v..(i + 1) * v].to_vec();
            process(cfg, &seqs[i], &mut row);
            let next = argmax(&row);
            seqs[i].push(next);
            feed[i] = next;
            on_token(i, next);
            if cfg.eos_token_id.contains(&next) {
                done[i] = true;
            }
        }
        cur_len += 1;
    }
    Ok(seqs
        .into_iter()
        .map(|tokens| {
            vec![Hypothesis {
                tokens,
                score: None,
            }]
        })
        .collect())
}

/// First index of the maximum, like `torch.argmax`.
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// Indices of the k largest values, descending; ties keep the lower index first (what
/// `torch.topk` returns on CPU). One pass with a small sorted buffer: k is 2-3 × num_beams
/// while x holds num_beams × vocab scores.
fn topk(x: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(x.len());
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.len() == k {
            match best.last() {
                Some(&last) if v > x[last] => {}
                _ => continue,
            }
        }
        // After every kept element that is >= v: equal values stay in index order.
        let pos = best.partition_point(|&j| x[j] >= v);
        best.insert(pos, i);
        best.truncate(k);
    }
    best
}

const NEG: f32 = -1.0e9;

struct BeamItem {
    running: Vec<Vec<u32>>,   // [num_beams] sequences of equal length
    running_scores: Vec<f32>, // [num_beams]
    finished: Vec<Vec<u32>>,  // [num_beams]
    finished_scores: Vec<f32>,
    finished_flag: Vec<bool>,
    improvable: bool, // transformers' is_early_stop_heuristic_unsatisfied
}

/// Beam search over `prompts.len()` batch items, `num_beams` rows each (row = item·beams + beam).
pub fn beam_search<D: StepDecoder>(
    dec: &mut D,
    cfg: &Resolved,
    prompts: Vec<Vec<u32>>,
) -> Result<Vec<Vec<Hypothesis>>> {
    let nb = cfg.num_beams;
    let v = dec.vocab_size();
    let prompt_len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let n_eos = cfg.eos_token_id.len();
    let keep = (1 + n_eos).max(2) * nb;
    let mut items: Vec<BeamItem> = prompts
        .into_iter()
        .map(|p| BeamItem {
            running: vec![p.clone(); nb],
            running_scores: (0..nb).map(|i| if i == 0 { 0.0 } else { NEG }).collect(),
            finished: vec![p; nb],
            finished_scores: vec![NEG; nb],
            finished_flag: vec![false; nb],
            improvable: true,
        })
        .collect();
    let mut cur_len = prompt_len;
    let mut feed: Vec<u32> = Vec::new();
    let mut first = true;
    while cur_len < cfg.max_length {
        let logits = if first {
            let rows: Vec<Vec<u32>> = items
                .iter()
                .flat_map(|it| it.running.iter().cloned())
                .collect();
            dec.prefill(&rows)?
        } else {
            dec.step(&feed)?
        };
        first = false;
        let mut reorder = Vec::with_capacity(items.len() * nb);
        let mut all_hit = true;
        for (bi, it) in items.iter_mut().enumerate() {
            // b. log-probs, processors, accumulated scores: [nb * V]
            let mut acc = vec![0f32; nb * v];
            for beam in 0..nb {
                let row = &mut acc[beam * v..(beam + 1) * v];
                let r = bi * nb + beam;
                row.copy_from_slice(&logits[r * v..(r + 1) * v]);
                log_softmax_inplace(row);
                process(cfg, &it.running[beam], row);
                let s = it.running_scores[beam];
                row.iter_mut().for_each(|x| *x += s);
            }
            // c. top-K continuations
            let top = topk(&acc, keep);
            let cand_lp: Vec<f32> = top.iter().map(|&i| acc[i]).collect();
            let cand_beam: Vec<usize> = top.iter().map(|&i| i / v).collect();
            let cand_tok: Vec<u32> = top.iter().map(|&i| (i % v) as u32).collect();
            // d. which candidates hit a stopping criterion (eos or max length)
            let hits: Vec<bool> = cand_tok
                .iter()
                .map(|t| cfg.eos_token_id.contains(t) || cur_len + 1 >= cfg.max_length)
                .collect();
            all_hit &= hits.iter().all(|&h| h);
            // e. next running beams: best non-finished candidates
            let run_lp: Vec<f32> = cand_lp
                .iter()
                .zip(&hits)
                .map(|(&lp, &h)| lp + if h { NEG } else { -0.0 })
                .collect();
            let next = topk(&run_lp, nb);
            let cand_seq = |k: usize| {
                let mut s = it.running[cand_beam[k]].clone();
                s.push(cand_tok[k]);
                s
            };
            let new_running: Vec<Vec<u32>> = next.iter().map(|&k| cand_seq(k)).collect();
            let new_scores: Vec<f32> = next.iter().map(|&k| run_lp[k]).collect();
            for &k in &next {
                reorder.push(bi * nb + cand_beam[k]);
            }
            // f. finished hypotheses: merge and keep the best nb
            let len_pen =
                (((cur_len + 1 - prompt_len) as f64).powf(cfg.length_penalty as f64)) as f32;
            let full =
                it.finished_flag.iter().all(|&f| f) && cfg.early_stopping == EarlyStopping::True;
            let mut merged_scores = it.finished_scores.clone();
            let mut merged_flag = it.finished_flag.clone();
            for k in 0..keep {
                let just_finished = hits[k] && k < nb;
                let mut s = cand_lp[k] / len_pen;
                s += if full { NEG } else { -0.0 };
                s += if it.improvable { -0.0 } else { NEG };
                s += if just_finished { -0.0 } else { NEG };
                merged_scores.push(s);
                merged_flag.push(just_finished);
            }
            let best = topk(&merged_scores, nb);
            let mut fin = Vec::with_capacity(nb);
            for &m in &best {
                fin.push(if m < nb {
                    it.finished[m].clone()
                } else {
                    cand_seq(m - nb)
                });
            }
            it.finished = fin;
            it.finished_scores = best.iter().map(|&m| merged_scores[m]).collect();
            it.finished_flag = best.iter().map(|&m| merged_flag[m]).collect();
            it.running = new_running;
            it.running_scores = new_scores;
        }
        dec.reorder(&reorder)?;
        cur_len += 1;
        // g. can a running beam still beat the worst finished one?
        let mut any_improvable = false;
        let mut all_full = true;
        for it in items.iter_mut() {
            let hyp_len = if cfg.early_stopping == EarlyStopping::Never && cfg.length_penalty > 0.0
            {
                cfg.max_length - prompt_len
            } else {
                cur_len - prompt_len
            };
            let best_running =
                it.running_scores[0] / ((hyp_len as f64).powf(cfg.length_penalty as f64) as f32);
            let min_all = it
                .finished_scores
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            let beats = it
                .finished_flag
                .iter()
                .any(|&f| best_running > if f { min_all } else { NEG });
            it.improvable = it.improvable && beats;
            any_improvable |= it.improvable;
            all_full &= it.finished_flag.iter().all(|&f| f);
        }
        let open = !(all_full && cfg.early_stopping == EarlyStopping::True);
        if !(any_improvable && open && !all_hit) {
            break;
        }
        feed = items
            .iter()
            .flat_map(|it| it.running.iter().map(|s| *s.last().unwrap_or(&0)))
            .collect();
    }
    Ok(items
        .into_iter()
        .map(|it| {
            it.finished
                .into_iter()
                .zip(it.finished_scores)
                .take(cfg.num_return_sequences)
                .map(|(tokens, score)| Hypothesis {
                    tokens,
                    score: Some(score),
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::topk;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn topk_matches_a_stable_sort(xs in proptest::collection::vec(-3i8..3, 0..200), k in 0usize..12) {
            let x: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
            let mut want: Vec<usize> = (0..x.len()).collect();
            want.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap().then(a.cmp(&b)));
            want.truncate(k);
            prop_assert_eq!(topk(&x, k), want);
        }
    }
}
