//! ferry-catalog (being built).
