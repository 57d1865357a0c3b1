//! Mecab-ko morpheme analysis (owned by the Mecab work; placeholder until it lands).
