//! Generation with transformers semantics: greedy and beam search, logits processors.
