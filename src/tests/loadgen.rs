//! End-to-end tests of the load harness (being written).
