//! Ferry's benchmarks. The binaries in src/bin are thin: each parses its settings and
//! calls a module here.

pub mod datamover;
