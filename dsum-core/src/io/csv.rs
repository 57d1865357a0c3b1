//! Generic CSV table reading (owned by the ROUGE work; placeholder).
