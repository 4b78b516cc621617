//! rectrain (being built).
