//! Load generator behind `progressdb-bench` (being written).
