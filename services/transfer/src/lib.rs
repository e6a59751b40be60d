//! ferry-transfer (being built).
