//! Logits processors, applied in the order transformers' `_get_logits_processor` builds
//! them: repetition penalty, no-repeat n-grams, bad words, min length, min new tokens,
//! forced BOS, forced EOS, suppressed tokens, begin-suppressed tokens. Each processor works
//! on one row: `seq` is that row's decoder ids so far (prompt included), `scores` its [V]
//! scores (raw logits for greedy, log-probabilities for beam search).

use std::collections::HashSet;

use super::config::Resolved;

pub fn process(cfg: &Resolved, seq: &[u32], scores: &mut [f32]) {
    let cur_len = seq.len();
    let v = scores.len();
    let set = |scores: &mut [f32], id: u32, val: f32| {
        if (id as usize) < v {
            scores[id as usize] = val;
        }
    };
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty;
        let seen: HashSet<u32> = seq.iter().copied().collect();
        for id in seen {
            if let Some(s) = scores.get_mut(id as usize) {
                *s = if *s < 0.0 { *s * p } else { *s / p };
            }
        }
    }
    if cfg.no_repeat_ngram_size > 0 {
        for id in banned_ngram_tokens(cfg.no_repeat_ngram_size, seq) {
            set(scores, id, f32::NEG_INFINITY);
        }
    }
    if !cfg.bad_words_ids.is_empty() {
        for word in &cfg.bad_words_ids {
            // A single-token bad word equal to an eos id is dropped by transformers.
            if word.len() == 1 && cfg.eos_token_id.contains(&word[0]) {
                continue;
            }
            if word.len() > cur_len && word.len() > 1 {
                continue;
            }
            let (prefix, last) = word.split_at(word.len() - 1);
            if prefix.is_empty() || seq.ends_with(prefix) {
                set(scores, last[0], f32::NEG_INFINITY);
            }
        }
    }
    if cur_len < cfg.min_length {
        for &e in &cfg.eos_token_id {
            set(scores, e, f32::NEG_INFINITY);
        }
    }
    if cfg.min_new_tokens > 0 && cur_len.saturating_sub(cfg.prompt_len) < cfg.min_new_tokens {
        for &e in &cfg.eos_token_id {
            set(scores, e, f32::NEG_INFINITY);
        }
    }
    if let Some(bos) = cfg.forced_bos_token_id {
        if cur_len == 1 {
            scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
            set(scores, bos, 0.0);
        }
    }
    if !cfg.forced_eos_token_id.is_empty() && cur_len + 1 == cfg.max_length {
        scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
        for &e in &cfg.forced_eos_token_id {
            set(scores, e, 0.0);
        }
    }
    for &t in &cfg.suppress_tokens {
        set(scores, t, f32::NEG_INFINITY);
    }
    if !cfg.begin_suppress_tokens.is_empty() {
        // transformers starts one later when a forced BOS occupies the first position.
        let begin = if cfg.prompt_len > 1 || cfg.forced_bos_token_id.is_none() {
            cfg.prompt_len
        } else {
            cfg.prompt_len + 1
        };
        if cur_len == begin {
            for &t in &cfg.begin_suppress_tokens {
                set(scores, t, f32::NEG_INFINITY);
            }
        }
    }
}

/// Tokens that would complete an n-gram already present in `seq` (fairseq's rule).
pub fn banned_ngram_tokens(n: usize, seq: &[u32]) -> Vec<u32> {
    let cur_len = seq.len();
    if cur_len + 1 < n || n == 0 {
        return Vec::new();
    }
    let prefix = &seq[cur_len + 1 - n..];
    let mut out = Vec::new();
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            out.push(w[n - 1]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::banned_ngram_tokens;

    #[test]
    fn ngram_bans_follow_fairseq() {
        // bigram (5, 6) seen; the sequence ends in 5, so 6 is banned.
        assert_eq!(banned_ngram_tokens(2, &[5, 6, 7, 5]), vec![6]);
        assert_eq!(banned_ngram_tokens(3, &[1, 2, 3, 1, 2]), vec![3]);
        assert!(banned_ngram_tokens(3, &[1, 2]).is_empty());
    }
}
