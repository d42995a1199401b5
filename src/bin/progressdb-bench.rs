//! `progressdb-bench`: HTTP/1.1 load generator for ProgressDB-compatible
//! servers. Parses flags, runs [`loadgen::run`], prints the table;
//! everything else lives in `src/loadgen/`, which is compiled into this
//! program (and its tests) only: the server library carries no load
//! generator, monoio runtime or histograms.
//!
//! Exit status: 0 after a run (errors are in the report), 2 when a run
//! could not happen, 1 when the tail scenario lost events, so that scripts
//! cannot miss it.

#[path = "../loadgen/mod.rs"]
mod loadgen;

use clap::Parser;
use loadgen::{Options, run};

fn main() {
    let options = Options::parse();
    match run(&options) {
        Ok(report) => {
            print!("{}", report.table());
            if report.tail.as_ref().is_some_and(|tail| !tail.complete()) {
                std::process::exit(1);
            }
        }
        Err(err) => {
            eprintln!("progressdb-bench: {err}");
            std::process::exit(2);
        }
    }
}
