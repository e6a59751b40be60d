//! ferry-pairing (being built).
