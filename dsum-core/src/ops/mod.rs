//! Forward (and later backward) operators, one file per op.
