//! ROUGE scoring (owned by the ROUGE work; placeholder until it lands).
