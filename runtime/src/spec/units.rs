//! Durations and sizes in specs (shared with the connectors' configs).

pub use sluice_connectors::units::*;
