//! recpredict (being written).
