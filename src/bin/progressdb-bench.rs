//! The load-test harness binary (being written).

fn main() {}
